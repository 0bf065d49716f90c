"""The Barlow Twins redundancy-reduction loss (Zbontar et al., 2021)."""

from __future__ import annotations

import torch
from torch import nn

from selfsup import distributed


def _standardize(z: torch.Tensor, eps: float) -> torch.Tensor:
    """Per-dimension standardisation over the batch, as BatchNorm1d(affine=False) in train mode
    (biased variance): the cross-correlation must be between unit-variance features."""
    mean = z.mean(dim=0)
    var = z.var(dim=0, unbiased=False)
    return (z - mean) / torch.sqrt(var + eps)


def off_diagonal(c: torch.Tensor) -> torch.Tensor:
    """The D*(D-1) off-diagonal entries of a square matrix, as a view (no D x D mask)."""
    d = c.shape[0]
    return c.flatten()[:-1].view(d - 1, d + 1)[:, 1:]


class BarlowTwinsLoss(nn.Module):
    """sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2, C the cross-correlation of the two views.

    Statistics and C are over the *global* batch: z1, z2 are gathered with gradient from all ranks,
    so every rank computes the same loss and, with DDP's gradient averaging, the exact gradient of
    the global-batch loss (the official code gets this with SyncBatchNorm and an all_reduce of C).
    The default lambda is the official code's 0.0051 (the paper states 5e-3).
    """

    def __init__(self, lambda_offdiag: float = 0.0051, eps: float = 1e-5):
        super().__init__()
        if lambda_offdiag < 0:
            raise ValueError(f"Barlow Twins lambda_offdiag must be >= 0, got {lambda_offdiag}")
        self.lambda_offdiag = lambda_offdiag
        self.eps = eps

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        z1 = distributed.gather_with_grad(z1.float())
        z2 = distributed.gather_with_grad(z2.float())
        n = z1.shape[0]
        if n < 2:
            raise ValueError(f"Barlow Twins needs a global batch of at least 2 to standardise, got {n}")
        with torch.autocast(z1.device.type, enabled=False):  # else mixed precision runs C's matmul in bf16/fp16
            c = _standardize(z1, self.eps).T @ _standardize(z2, self.eps) / n  # (D, D)
        on_diag = (1.0 - torch.diagonal(c)).pow(2).sum()
        off_diag = off_diagonal(c).pow(2).sum()
        return on_diag + self.lambda_offdiag * off_diag
