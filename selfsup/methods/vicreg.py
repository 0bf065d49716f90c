"""VICReg (Bardes, Ponce & LeCun 2022): no negatives, no asymmetry; the loss itself forbids collapse:
each embedding dimension keeps a standard deviation of at least 1 over the batch (variance), the
dimensions are decorrelated (covariance) and the two views' embeddings agree (invariance)."""

from __future__ import annotations

import torch

from selfsup.losses.vicreg import VICRegLoss
from selfsup.methods.base import SSLMethod, StepOutput
from selfsup.models.heads import MLPHead


class VICReg(SSLMethod):
    num_views = 2
    losses = (VICRegLoss,)

    def __init__(self, cfg):
        super().__init__(cfg)
        self.expander = MLPHead(self.feature_dim, **cfg.method.expander)

    def training_loss(self, views: list[torch.Tensor]) -> StepOutput:
        # Each view is its own forward (own BatchNorm batch), as in the reference implementation.
        features = [self.backbone(v) for v in views]
        z1, z2 = (self.expander(f) for f in features)
        loss, terms = self.loss_fn(z1, z2)
        logs = {f"vicreg_{name}_loss": value for name, value in terms.items()}
        return StepOutput(loss=loss, features=features[0], logs=logs, embeddings=z1)
