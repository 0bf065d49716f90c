"""SimCLR (Chen et al. 2020): both views through backbone and projector, NT-Xent between them."""

from __future__ import annotations

import torch

from selfsup.losses.nt_xent import NTXentLoss
from selfsup.losses.pairwise_margin import PairwiseMarginLoss
from selfsup.methods.base import SSLMethod, StepOutput
from selfsup.models.heads import MLPHead


class SimCLR(SSLMethod):
    num_views = 2
    losses = (NTXentLoss, PairwiseMarginLoss)

    def __init__(self, cfg):
        super().__init__(cfg)
        self.projector = MLPHead(self.feature_dim, **cfg.method.projector)

    def training_loss(self, views: list[torch.Tensor]) -> StepOutput:
        # One forward over both views: BatchNorm sees the whole 2B batch, as in the paper's code.
        features = self.backbone(torch.cat(views))
        z1, z2 = self.projector(features).chunk(2)
        return StepOutput(loss=self.loss_fn(z1, z2), features=features[: len(views[0])], embeddings=z1)
