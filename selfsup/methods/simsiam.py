"""SimSiam (Chen & He 2021): BYOL without the momentum encoder. Both views go through one encoder
(backbone + projector); a predictor maps one view's projection onto the other's, which is held fixed
by a stop-gradient, the only thing keeping the two from collapsing to a constant. Symmetric loss."""

from __future__ import annotations

import torch

from selfsup.losses.byol import BYOLLoss
from selfsup.losses.negative_cosine import NegativeCosineLoss
from selfsup.methods.base import SSLMethod, StepOutput
from selfsup.models.heads import MLPHead


class SimSiam(SSLMethod):
    num_views = 2
    losses = (BYOLLoss, NegativeCosineLoss)

    def __init__(self, cfg):
        super().__init__(cfg)
        self.projector = MLPHead(self.feature_dim, **cfg.method.projector)
        self.predictor = MLPHead(cfg.method.projector.output_dim, **cfg.method.predictor)
        if cfg.method.fixed_predictor_lr:  # the paper's best (Sec. 4.2): the predictor adapts at the full LR
            self.constant_lr_modules = ("predictor",)

    def training_loss(self, views: list[torch.Tensor]) -> StepOutput:
        # Each view is its own forward (own BatchNorm batch), as in the reference implementation.
        features = [self.backbone(v) for v in views]
        projections = [self.projector(f) for f in features]
        predictions = [self.predictor(z) for z in projections]
        # D(p1, z2) / 2 + D(p2, z1) / 2; the loss detaches the projections (stop-gradient).
        loss = (self.loss_fn(predictions[0], projections[1]) + self.loss_fn(predictions[1], projections[0])) / 2
        return StepOutput(loss=loss, features=features[0], embeddings=projections[0])
