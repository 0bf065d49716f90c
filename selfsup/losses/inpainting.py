"""Masked reconstruction loss of the context encoder (Pathak et al., 2016)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class InpaintingLoss(nn.Module):
    """L2 on the hidden region only, with the `overlap`-pixel band just inside the mask edge weighted
    `overlap_weight` times: there the prediction must join the visible context seamlessly (the paper
    uses 4 px at 128 px and weight 10).

    The loss is the weighted mean over hidden pixels and channels. Visible pixels are selected away
    with `torch.where` before squaring, so they change neither the value nor the gradient, even if
    they are inf or NaN. Image borders are not mask edges: only hidden pixels near visible ones count.
    """

    def __init__(self, overlap: int = 4, overlap_weight: float = 10.0):
        super().__init__()
        if overlap < 0 or overlap_weight < 0:
            raise ValueError(f"overlap ({overlap}) and overlap_weight ({overlap_weight}) must be >= 0")
        self.overlap = overlap
        self.overlap_weight = overlap_weight

    def pixel_weights(self, mask: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W): 0 visible, 1 hidden interior, `overlap_weight` in the band along the edge."""
        hidden = mask > 0.5
        if self.overlap == 0:
            return hidden.float()
        # A hidden pixel is in the band when a visible pixel lies within `overlap` (Chebyshev distance);
        # max-pool pads with -inf, so beyond the image border nothing is visible.
        near_visible = F.max_pool2d((~hidden).float(), 2 * self.overlap + 1, stride=1, padding=self.overlap) > 0
        band = hidden & near_visible
        return hidden.float() + (self.overlap_weight - 1) * band.float()

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = self.pixel_weights(mask)
        hidden = weights > 0
        squared_error = torch.where(hidden, pred.float() - target.float(), 0.0).pow(2)
        total_weight = weights.sum() * pred.shape[1]
        return (weights * squared_error).sum() / total_weight.clamp_min(1e-12)  # empty mask: 0
