"""Masked reconstruction loss of the context encoder (Pathak et al., 2016)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class InpaintingLoss(nn.Module):
    """L2 on the region the decoder redraws: the hidden pixels and the `overlap`-pixel rim of visible
    context around them, the rim weighted `overlap_weight` times so the prediction joins the context
    seamlessly. This is Pathak's reference code (train.lua: the hole is filled `overlapPred` = 4 px
    inside the predicted 64x64 centre, and `wtl2Matrix` gives that visible border 10x the weight of the
    hole, overlapL2Weight = 10); the loss is, as there, the weighted squared error averaged over the
    redrawn region's pixels and channels.

    Pixels outside the region are selected away with `torch.where` before squaring, so they change
    neither the value nor the gradient, even if they are inf or NaN. Image borders are not mask edges.
    """

    def __init__(self, overlap: int = 4, overlap_weight: float = 10.0):
        super().__init__()
        if overlap < 0 or overlap_weight < 0:
            raise ValueError(f"overlap ({overlap}) and overlap_weight ({overlap_weight}) must be >= 0")
        self.overlap = overlap
        self.overlap_weight = overlap_weight

    def pixel_weights(self, mask: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W): 1 hidden, `overlap_weight` on the visible rim within `overlap` px (Chebyshev
        distance) of a hidden pixel, 0 elsewhere; nonzero exactly on the redrawn region."""
        hidden = mask > 0.5
        if self.overlap == 0:
            return hidden.float()
        near_hidden = F.max_pool2d(hidden.float(), 2 * self.overlap + 1, stride=1, padding=self.overlap) > 0
        rim = near_hidden & ~hidden
        return hidden.float() + self.overlap_weight * rim.float()

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = self.pixel_weights(mask)
        redrawn = weights > 0
        squared_error = torch.where(redrawn, pred.float() - target.float(), 0.0).pow(2)
        pixels = redrawn.sum() * pred.shape[1]
        return (weights * squared_error).sum() / pixels.clamp_min(1)  # empty mask: 0
