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


def gamut_bins(bin_size: float) -> torch.Tensor:
    """(n*n,) bool over the ab grid (centres at multiples of `bin_size` in [-110, 110], as the paper's):
    which bins hold an sRGB colour at some lightness (sampled at 64 levels per channel: the same bins as
    all 256). At bin size 10 that is Q = 261 bins spanning a in [-90, 100], b in [-110, 90], the same
    span as the paper's file of Q = 313 (its own gamut computation, which we cannot download here)."""
    from selfsup.data.pretext import rgb_to_lab

    n = 2 * math.ceil(AB_MAX / bin_size) + 1
    levels = torch.linspace(0, 1, 64)
    rgb = torch.stack(torch.meshgrid(levels, levels, levels, indexing="ij")).flatten(1)  # (3, N)
    ab = rgb_to_lab(rgb.view(1, 3, -1, 1))[0, 1:, :, 0]  # (2, N)
    index = ((ab + AB_MAX) / bin_size).round().clamp(0, n - 1).long()
    in_gamut = torch.zeros(n * n, dtype=torch.bool)
    in_gamut[index[0] * n + index[1]] = True
    return in_gamut


class ColorizationLoss(nn.Module):
    """`kind="regression"`: smooth L1 or L2 between the prediction and ab / 110 (2 output channels).

    `kind="classification"` (Zhang et al. 2016, Sec. 2.1): the ab plane is cut into `bin_size` bins
    centred on multiples of it, of which the Q in-gamut ones are the classes (`gamut_bins`); the target
    of a pixel is a Gaussian (`sigma`) over its 5 nearest in-gamut bins (the paper's soft encoding) and
    the cross-entropy of each pixel is weighted by 1 / ((1 - rebalance) * prior + rebalance / Q) of its
    nearest bin, normalised to mean 1 under the prior. The prior is the Gaussian-smoothed histogram of
    the colours trained on so far (a buffer, checkpointed), standing in for the paper's ImageNet-wide
    one. A prediction is decoded by the annealed mean of the bin centres at `temperature`.

    Predictions and targets may differ in size (the paper predicts at 1/4 of the input resolution):
    the target is area-averaged to the prediction's size.
    """

    NEIGHBOURS = 5  # the paper's soft encoding

    def __init__(
        self,
        kind: str = "regression",
        regression: str = "smooth_l1",
        bin_size: float = 10.0,
        sigma: float = 5.0,
        rebalance: float = 0.5,
        temperature: float = 0.38,
    ):
        super().__init__()
        if kind not in ("regression", "classification"):
            raise ValueError(f"colorization loss kind must be regression or classification, got {kind!r}")
        if regression not in ("smooth_l1", "l2"):
            raise ValueError(f"colorization regression must be smooth_l1 or l2, got {regression!r}")
        if bin_size <= 0 or sigma <= 0 or temperature <= 0 or not 0.0 <= rebalance <= 1.0:
            raise ValueError("colorization loss needs bin_size, sigma, temperature > 0 and rebalance in [0, 1]")
        self.kind, self.regression = kind, regression
        self.bin_size, self.sigma, self.rebalance, self.temperature = bin_size, sigma, rebalance, temperature
        self.bins_per_axis = 2 * math.ceil(AB_MAX / bin_size) + 1
        grid = -AB_MAX + bin_size * torch.arange(self.bins_per_axis, dtype=torch.float32)
        a, b = torch.meshgrid(grid, grid, indexing="ij")
        in_gamut = gamut_bins(bin_size) if kind == "classification" else torch.zeros(len(grid) ** 2, dtype=torch.bool)
        self.register_buffer("bin_of_class", in_gamut.nonzero()[:, 0], persistent=False)  # class -> ab grid cell
        self.register_buffer("bin_centers", torch.stack([a.flatten(), b.flatten()], dim=1)[in_gamut], persistent=False)
        self.register_buffer("bin_counts", torch.zeros(len(self.bin_centers), dtype=torch.float64))

    @property
    def num_outputs(self) -> int:
        """Channels the decoder must predict: 2 (ab) or one logit per in-gamut bin (Q)."""
        return 2 if self.kind == "regression" else len(self.bin_centers)

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

    def _classification_loss(self, logits: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        pixels = ab.permute(0, 2, 3, 1).reshape(-1, 2)  # (P, 2)
        squared_distance = torch.cdist(pixels, self.bin_centers).square()  # (P, Q)
        squared_distance, classes = squared_distance.topk(self.NEIGHBOURS, dim=1, largest=False)
        soft = torch.softmax(-squared_distance / (2 * self.sigma**2), dim=1)  # (P, 5)
        log_probs = F.log_softmax(logits, dim=1).permute(0, 2, 3, 1).reshape(len(pixels), -1)
        pixel_loss = -(soft * log_probs.gather(1, classes)).sum(dim=1)  # (P,)
        nearest = classes[:, 0]
        if self.training:
            self.bin_counts += torch.bincount(nearest, minlength=len(self.bin_centers)).to(self.bin_counts)
        return (self.rebalancing_weights()[nearest] * pixel_loss).mean()

    def rebalancing_weights(self) -> torch.Tensor:
        """(Q,) per-class weights: 1 / mixture of the smoothed prior and uniform, E_prior[w] = 1. The
        prior is smoothed on the ab grid (a Gaussian of `sigma`, as the paper's)."""
        n = self.bins_per_axis
        counts = self.bin_counts.float()
        if counts.sum() == 0:
            return torch.ones_like(counts)
        prior = torch.zeros(n * n, device=counts.device).index_copy(0, self.bin_of_class, counts / counts.sum())
        s = self.sigma / self.bin_size  # in bins
        radius = max(1, math.ceil(3 * s))
        kernel = torch.exp(
            -(torch.arange(-radius, radius + 1, device=counts.device, dtype=torch.float32) ** 2) / (2 * s**2)
        )
        kernel = kernel / kernel.sum()
        smoothed = F.conv2d(
            prior.view(1, 1, n, n), (kernel[:, None] * kernel[None, :])[None, None], padding=radius
        ).flatten()[self.bin_of_class]
        smoothed = smoothed / smoothed.sum()  # the mass smoothed out of the gamut, put back
        seen = (counts > 0).sum().clamp_min(1)
        weights = 1.0 / ((1 - self.rebalance) * smoothed + self.rebalance / seen).clamp_min(1e-6)
        return weights / (smoothed * weights).sum()
