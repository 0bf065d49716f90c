"""The VICReg loss (Bardes, Ponce & LeCun 2022): variance, invariance, covariance."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup import distributed
from selfsup.losses.barlow_twins import off_diagonal


class VICRegLoss(nn.Module):
    """lambda * inv + mu * std + nu * cov between the two views' embeddings z1, z2 (N x D):

    inv: mean squared error between z1 and z2;
    std: per view, mean over dimensions of relu(gamma - sqrt(Var(z_j) + eps)), averaged over the views;
    cov: per view, sum of the squared off-diagonal entries of the covariance matrix / D, summed over views.

    The invariance term is a mean over the local batch (DDP's gradient averaging makes it the global one);
    variance and covariance are statistics of the *global* batch: z1, z2 are gathered with gradient from
    all ranks, as in the official code. Returns (loss, {"inv", "std", "cov"}: the unweighted terms).
    """

    def __init__(
        self,
        invariance_weight: float = 25.0,
        variance_weight: float = 25.0,
        covariance_weight: float = 1.0,
        gamma: float = 1.0,
        eps: float = 1e-4,
    ):
        super().__init__()
        if min(invariance_weight, variance_weight, covariance_weight) < 0 or gamma <= 0 or eps <= 0:
            raise ValueError("VICReg loss weights must be >= 0 and gamma, eps > 0")
        self.weights = (invariance_weight, variance_weight, covariance_weight)
        self.gamma, self.eps = gamma, eps

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        z1, z2 = z1.float(), z2.float()
        invariance = F.mse_loss(z1, z2)
        z1, z2 = distributed.gather_with_grad(z1), distributed.gather_with_grad(z2)
        if z1.shape[0] < 2:
            raise ValueError(f"VICReg needs a global batch of at least 2 for its variance, got {z1.shape[0]}")
        with torch.autocast(z1.device.type, enabled=False):  # else mixed precision runs the covariance in bf16/fp16
            variance = (self._variance(z1) + self._variance(z2)) / 2
            covariance = self._covariance(z1) + self._covariance(z2)
        terms = {"inv": invariance, "std": variance, "cov": covariance}
        loss = sum(weight * term for weight, term in zip(self.weights, terms.values()))
        return loss, {name: term.detach() for name, term in terms.items()}

    def _variance(self, z: torch.Tensor) -> torch.Tensor:
        std = torch.sqrt(z.var(dim=0) + self.eps)
        return F.relu(self.gamma - std).mean()

    @staticmethod
    def _covariance(z: torch.Tensor) -> torch.Tensor:
        z = z - z.mean(dim=0)
        cov = z.T @ z / (z.shape[0] - 1)
        return off_diagonal(cov).pow(2).sum() / z.shape[1]
