"""The negative cosine similarity with stop-gradient, SimSiam's D (Chen & He 2021); BYOL's regression
loss (Grill et al. 2020) is the same quantity as 2 + 2 D."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """-cos(p, stop_grad(z)) per row: `z` is detached, the stop-gradient that keeps SimSiam and BYOL
    from collapsing. Computed in float32 so the normalisation is exact under mixed precision."""
    p = F.normalize(p.float(), dim=-1)
    z = F.normalize(z.detach().float(), dim=-1)
    return -(p * z).sum(dim=-1)


class NegativeCosineLoss(nn.Module):
    """D(p, z) = -cos(p, stop_grad(z)), averaged over the batch; the method calls it for both view orders."""

    def forward(self, p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return negative_cosine(p, z).mean()
