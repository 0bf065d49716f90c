"""Barlow Twins (Zbontar et al. 2021): a wide projector (8192-8192-8192) whose outputs for the two
views should have a cross-correlation matrix close to the identity."""

from __future__ import annotations

import torch

from selfsup.losses.barlow_twins import BarlowTwinsLoss
from selfsup.methods.base import SSLMethod, StepOutput
from selfsup.models.heads import MLPHead


class BarlowTwins(SSLMethod):
    num_views = 2
    losses = (BarlowTwinsLoss,)

    def __init__(self, cfg):
        super().__init__(cfg)
        self.projector = MLPHead(self.feature_dim, **cfg.method.projector)

    def training_loss(self, views: list[torch.Tensor]) -> StepOutput:
        # Each view is its own forward (own BatchNorm batch), as in the reference implementation;
        # the loss standardises each dimension over the (global) batch and builds C from that.
        features = [self.backbone(v) for v in views]
        z1, z2 = (self.projector(f) for f in features)
        return StepOutput(loss=self.loss_fn(z1, z2), features=features[0], embeddings=z1)
