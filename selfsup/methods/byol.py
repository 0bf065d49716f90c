"""BYOL (Grill et al. 2020): the online network (backbone, projector, predictor) regresses the
target network's projection of the other view; the target is an EMA of the online backbone and
projector whose momentum follows a cosine schedule from 0.996 to 1. Symmetric loss."""
from __future__ import annotations

import torch
from torch import nn

from selfsup.errors import UserError
from selfsup.methods.base import StepOutput
from selfsup.methods.momentum import make_target
from selfsup.methods.momentum_method import MomentumMethod
from selfsup.models.heads import MLPHead


class BYOL(MomentumMethod):
    def __init__(self, cfg):
        super().__init__(cfg)
        method = cfg.method
        if len(cfg.augmentation.views) != 2:
            raise UserError(f"BYOL uses 2 views, augmentation.views has {len(cfg.augmentation.views)}")
        self.projector = MLPHead(self.feature_dim, **method.projector)
        self.predictor = MLPHead(method.projector.output_dim, **method.predictor)
        self.target_encoder = make_target(self._online_encoder())

    def _online_encoder(self) -> nn.Module:
        # Built on the fly, not stored: an attribute would register backbone twice in state_dict.
        return nn.Sequential(self.backbone, self.projector)

    def momentum_pairs(self):
        return [(self._online_encoder(), self.target_encoder)]

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
