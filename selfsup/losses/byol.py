"""The BYOL regression loss (Grill et al., 2020)."""

from __future__ import annotations

import torch
from torch import nn

from selfsup.losses.negative_cosine import negative_cosine


class BYOLLoss(nn.Module):
    """Mean of 2 - 2 cos(p, z): the squared distance between the L2-normalised online prediction
    `p` and target projection `z`. `z` is detached: the target is updated only by EMA, and that
    stop-gradient is what keeps BYOL from collapsing. The method calls it for both view orders."""

    def forward(self, p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return (2.0 + 2.0 * negative_cosine(p, z)).mean()
