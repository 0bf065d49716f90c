"""The VICReg loss against the paper element by element, its variance hinge, and 2 ranks against 1 process on the
global batch."""

from __future__ import annotations

import math

import pytest
import torch
from distributed_harness import check_loss_matches_global_batch
from torch import nn

from selfsup.losses.vicreg import VICRegLoss

pytestmark = pytest.mark.usefixtures("one_thread")


def _vicreg_naive(z1, z2, lam=25.0, mu=25.0, nu=1.0, gamma=1.0, eps=1e-4):
    """Bardes et al. 2022, Eqs. 1-6, written out element by element in float64."""
    z1, z2 = z1.double().tolist(), z2.double().tolist()
    n, d = len(z1), len(z1[0])
    inv = sum((z1[i][j] - z2[i][j]) ** 2 for i in range(n) for j in range(d)) / (n * d)

    def mean(z, j):
        return sum(z[i][j] for i in range(n)) / n

    def cov(z, a, b):
        return sum((z[i][a] - mean(z, a)) * (z[i][b] - mean(z, b)) for i in range(n)) / (n - 1)

    def v(z):
        return sum(max(0.0, gamma - math.sqrt(cov(z, j, j) + eps)) for j in range(d)) / d

    def c(z):
        return sum(cov(z, a, b) ** 2 for a in range(d) for b in range(d) if a != b) / d

    std, covariance = (v(z1) + v(z2)) / 2, c(z1) + c(z2)
    return lam * inv + mu * std + nu * covariance, {"inv": inv, "std": std, "cov": covariance}


def test_vicreg_matches_the_paper_element_by_element():
    torch.manual_seed(0)
    z1 = torch.randn(8, 5) * torch.tensor([0.3, 1.0, 2.0, 0.5, 1.5]) + 1
    z2 = z1 + 0.4 * torch.randn(8, 5)
    for weights in ((25.0, 25.0, 1.0), (1.0, 2.0, 3.0)):
        loss, terms = VICRegLoss(*weights)(z1, z2)
        expected, expected_terms = _vicreg_naive(z1, z2, *weights)
        assert loss.item() == pytest.approx(expected, rel=1e-5)
        for name, value in expected_terms.items():
            assert terms[name].item() == pytest.approx(value, rel=1e-5, abs=1e-6), name


def test_vicreg_variance_hinge_and_collapse():
    """Every dimension with std >= gamma pays nothing; a collapsed batch pays gamma - sqrt(eps) per view."""
    torch.manual_seed(0)
    spread = torch.randn(64, 4) * 5
    assert VICRegLoss()(spread, spread)[1]["std"].item() == 0.0
    collapsed = torch.ones(8, 4)
    assert VICRegLoss()(collapsed, collapsed)[1]["std"].item() == pytest.approx(1 - math.sqrt(1e-4), rel=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        VICRegLoss()(torch.randn(1, 3), torch.randn(1, 3))


class _LossValue(nn.Module):
    """A (loss, terms) loss as the plain loss the distributed harness differentiates."""

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, z1, z2):
        return self.loss(z1, z2)[0]


def test_vicreg_two_ranks_match_global_batch():
    """Variance and covariance over the global batch (gathered with gradient), invariance averaged by
    DDP: 2 gloo ranks give the loss and the input and parameter gradients of one process on 2B."""
    check_loss_matches_global_batch(_LossValue(VICRegLoss()))
