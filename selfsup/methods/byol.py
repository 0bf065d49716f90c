"""BYOL (Grill et al. 2020): the online network (backbone, projector, predictor) regresses the
target network's projection of the other view; the target is an EMA of the online backbone and
projector whose momentum follows a cosine schedule from 0.996 to 1. Symmetric loss."""

from __future__ import annotations

import torch

from selfsup.losses.byol import BYOLLoss
from selfsup.losses.negative_cosine import NegativeCosineLoss
from selfsup.methods.base import StepOutput
from selfsup.methods.momentum_method import MomentumMethod
from selfsup.models.heads import MLPHead


class BYOL(MomentumMethod):
    num_views = 2
    losses = (BYOLLoss, NegativeCosineLoss)

    def __init__(self, cfg):
        super().__init__(cfg)
        method = cfg.method
        self.projector = MLPHead(self.feature_dim, **method.projector)
        self.predictor = MLPHead(method.projector.output_dim, **method.predictor)
        self.make_momentum_target()  # self.target_encoder: EMA of backbone + projector

    def training_loss(self, views: list[torch.Tensor]) -> StepOutput:
        # Each view is its own forward (own BatchNorm batch), as in the reference implementation.
        features = [self.backbone(v) for v in views]
        projections = [self.projector(f) for f in features]
        predictions = [self.predictor(z) for z in projections]
        with torch.no_grad():
            targets = [self.target_encoder(v) for v in views]
        # L(p1, z2') + L(p2, z1'); the loss detaches the targets (stop-gradient).
        loss = self.loss_fn(predictions[0], targets[1]) + self.loss_fn(predictions[1], targets[0])
        return StepOutput(
            loss=loss, features=features[0], logs={"momentum": self.current_momentum()}, embeddings=projections[0]
        )
