"""Colour-prediction loss of the colorization pretext task (Zhang, Isola & Efros 2016).

Given the lightness, the decoder predicts the ab channels of CIE Lab, either by regression or, as in
the paper, by classification over a grid of quantised ab bins with a soft-encoded target and class
rebalancing (rare, saturated colours weigh more, so the network does not settle for greyish averages).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

AB_MAX = 110.0  # |a|, |b| of sRGB colours stay below this


class ColorizationLoss(nn.Module):
    """`kind="regression"`: smooth L1 or L2 between the prediction and ab / 110 (2 output channels).

    `kind="classification"`: the ab plane [-110, 110]^2 is cut into `bin_size` bins (22 x 22 = 484 at
    the paper's 10); the target of a pixel is a Gaussian (`sigma`) over the 3x3 bins around its colour
    (the paper: 5 nearest of 313 in-gamut bins) and the cross-entropy of each pixel is weighted by
    1 / ((1 - rebalance) * prior + rebalance / Q) of its nearest bin, normalised to mean 1 under the
    prior. The prior is the Gaussian-smoothed histogram of the colours trained on so far (a buffer,
    checkpointed), standing in for the paper's ImageNet-wide one; Q counts the bins seen. A prediction
    is decoded by the annealed mean of the bin centres at `temperature`.

    Predictions and targets may differ in size (the paper predicts at 1/4 of the input resolution):
    the target is area-averaged to the prediction's size.
    """

    def __init__(self, kind: str = "regression", regression: str = "smooth_l1", bin_size: float = 10.0,
                 sigma: float = 5.0, rebalance: float = 0.5, temperature: float = 0.38):
        super().__init__()
        if kind not in ("regression", "classification"):
            raise ValueError(f"colorization loss kind must be regression or classification, got {kind!r}")
        if regression not in ("smooth_l1", "l2"):
            raise ValueError(f"colorization regression must be smooth_l1 or l2, got {regression!r}")
        if bin_size <= 0 or sigma <= 0 or temperature <= 0 or not 0.0 <= rebalance <= 1.0:
            raise ValueError("colorization loss needs bin_size, sigma, temperature > 0 and rebalance in [0, 1]")
        self.kind, self.regression = kind, regression
        self.bin_size, self.sigma, self.rebalance, self.temperature = bin_size, sigma, rebalance, temperature
        self.bins_per_axis = math.ceil(2 * AB_MAX / bin_size)
        centers = -AB_MAX + bin_size * (torch.arange(self.bins_per_axis, dtype=torch.float32) + 0.5)
        a, b = torch.meshgrid(centers, centers, indexing="ij")
        self.register_buffer("bin_centers", torch.stack([a.flatten(), b.flatten()], dim=1), persistent=False)
        self.register_buffer("bin_counts", torch.zeros(self.bins_per_axis ** 2, dtype=torch.float64))

    @property
    def num_outputs(self) -> int:
        """Channels the decoder must predict: 2 (ab) or one logit per bin."""
        return 2 if self.kind == "regression" else self.bins_per_axis ** 2

    def forward(self, pred: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        """pred: the decoder output (B, num_outputs, h, w); ab: the true colour (B, 2, H, W) in Lab units."""
        pred, ab = pred.float(), ab.float()
        if ab.shape[-2:] != pred.shape[-2:]:
            ab = F.adaptive_avg_pool2d(ab, pred.shape[-2:])
        if self.kind == "regression":
            target = ab / AB_MAX
            return F.smooth_l1_loss(pred, target) if self.regression == "smooth_l1" else F.mse_loss(pred, target)
        return self._classification_loss(pred, ab)

    def decode(self, pred: torch.Tensor) -> torch.Tensor:
        """The decoder output as ab (B, 2, h, w) in Lab units."""
        if self.kind == "regression":
            return pred.float() * AB_MAX
        probs = torch.softmax(pred.float() / self.temperature, dim=1)
        return torch.einsum("bqhw,qc->bchw", probs, self.bin_centers)

    def _bin_center(self, index: torch.Tensor) -> torch.Tensor:
        return -AB_MAX + self.bin_size * (index.float() + 0.5)

    def _classification_loss(self, logits: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        n = self.bins_per_axis
        nearest = ((ab + AB_MAX) / self.bin_size - 0.5).round().clamp(0, n - 1).long()      # (B, 2, h, w)
        offsets = torch.arange(-1, 2, device=ab.device).view(1, 3, 1, 1)
        ia = (nearest[:, :1] + offsets)[:, :, None]                                        # (B, 3, 1, h, w)
        ib = (nearest[:, 1:] + offsets)[:, None]                                           # (B, 1, 3, h, w)
        valid = (ia >= 0) & (ia < n) & (ib >= 0) & (ib < n)                                # (B, 3, 3, h, w)
        squared_distance = ((ab[:, 0, None, None] - self._bin_center(ia)) ** 2
                            + (ab[:, 1, None, None] - self._bin_center(ib)) ** 2)
        soft = torch.exp(-squared_distance / (2 * self.sigma ** 2)) * valid
        soft = (soft / soft.sum(dim=(1, 2), keepdim=True)).flatten(1, 2)                   # (B, 9, h, w)
        neighbours = (ia.clamp(0, n - 1) * n + ib.clamp(0, n - 1)).flatten(1, 2)           # (B, 9, h, w)
        log_probs = F.log_softmax(logits, dim=1).gather(1, neighbours)
        pixel_loss = -(soft * log_probs).sum(dim=1)                                        # (B, h, w)

        hard = nearest[:, 0] * n + nearest[:, 1]                                           # (B, h, w)
        if self.training:
            self.bin_counts += torch.bincount(hard.flatten(), minlength=n * n).to(self.bin_counts)
        return (self.rebalancing_weights()[hard] * pixel_loss).mean()

    def rebalancing_weights(self) -> torch.Tensor:
        """(Q,) per-bin weights: 1 / mixture of the smoothed prior and uniform, E_prior[w] = 1."""
        n = self.bins_per_axis
        counts = self.bin_counts.float()
        if counts.sum() == 0:
            return torch.ones_like(counts)
        prior = counts / counts.sum()
        s = self.sigma / self.bin_size                                                      # in bins
        radius = max(1, math.ceil(3 * s))
        kernel = torch.exp(-torch.arange(-radius, radius + 1, device=counts.device, dtype=torch.float32) ** 2
                           / (2 * s ** 2))
        kernel = kernel / kernel.sum()
        smoothed = F.conv2d(prior.view(1, 1, n, n), (kernel[:, None] * kernel[None, :])[None, None],
                            padding=radius).flatten()
        seen = (counts > 0).sum().clamp_min(1)
        weights = 1.0 / ((1 - self.rebalance) * smoothed + self.rebalance / seen).clamp_min(1e-6)
        return weights / (smoothed * weights).sum()
