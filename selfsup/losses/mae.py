"""MAE's reconstruction loss (He et al. 2022): the mean squared error between predicted and true pixels
of the masked patches only; visible patches are not scored (the encoder saw them).

With `norm_pix_loss` (the paper's default, Table 1d: +0.6 fine-tuning top-1) each target patch is first
normalised by its own mean and variance, so the loss is about structure, not brightness; predicting a
patch's mean then scores about 1.0, the baseline a learning run must fall well below."""

from __future__ import annotations

import torch
from torch import nn


class MAELoss(nn.Module):
    def __init__(self, norm_pix_loss: bool = True, eps: float = 1.0e-6):
        super().__init__()
        self.norm_pix_loss = norm_pix_loss
        self.eps = eps

    def _statistics(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-patch mean and standard deviation (over its pixels and channels), as MAE's code computes them."""
        return patches.mean(dim=-1, keepdim=True), (patches.var(dim=-1, keepdim=True) + self.eps).sqrt()

    def forward(self, pred: torch.Tensor, patches: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """pred, patches: (B, L, patch pixels); mask: (B, L), 1 where the patch was hidden, 0 where visible.
        Computed in float32 (a bf16 squared error loses the small differences late in training)."""
        target = patches.float()
        if self.norm_pix_loss:
            mean, std = self._statistics(target)
            target = (target - mean) / std
        per_patch = (pred.float() - target).pow(2).mean(dim=-1)
        return (per_patch * mask).sum() / mask.sum()

    def to_pixels(self, pred: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """Predictions back in the images' value space, for pictures: with norm_pix_loss each predicted
        patch takes the true patch's mean and spread (as MAE's own visualisations do), so a picture shows
        the structure the model predicted in the colours the image had."""
        if not self.norm_pix_loss:
            return pred
        mean, std = self._statistics(patches.float())
        return pred.float() * std + mean
