"""The Barlow Twins loss against a naive double loop, its edge cases, and 2 ranks against 1 process on the global
batch."""

from __future__ import annotations

import math

import pytest
import torch
from distributed_harness import check_loss_matches_global_batch

from selfsup.losses.barlow_twins import BarlowTwinsLoss


def _barlow_naive(z1, z2, lam, eps=1e-5):
    n, d = len(z1), len(z1[0])

    def standardise(z):
        cols = []
        for j in range(d):
            col = [z[i][j] for i in range(n)]
            mu = sum(col) / n
            var = sum((x - mu) ** 2 for x in col) / n
            cols.append([(x - mu) / math.sqrt(var + eps) for x in col])
        return cols  # cols[j][i]

    a, b = standardise(z1), standardise(z2)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c_ij = sum(a[i][s] * b[j][s] for s in range(n)) / n
            loss += (1 - c_ij) ** 2 if i == j else lam * c_ij**2
    return loss


def test_barlow_twins_matches_naive_double_loop():
    torch.manual_seed(0)
    z1 = torch.randn(8, 5) * 2 + 1
    z2 = torch.randn(8, 5) + 0.5 * z1
    for lam in (0.0051, 0.5):
        expected = _barlow_naive(z1.tolist(), z2.tolist(), lam)
        got = BarlowTwinsLoss(lambda_offdiag=lam)(z1, z2)
        assert got.dtype == torch.float32
        assert got.item() == pytest.approx(expected, rel=1e-5)
    assert BarlowTwinsLoss().lambda_offdiag == 0.0051


def test_barlow_twins_perfectly_standardised_identical_inputs():
    torch.manual_seed(0)
    n, d, eps = 8, 5, 1e-5
    a = torch.randn(n, d, dtype=torch.float64)
    q, _ = torch.linalg.qr(a - a.mean(dim=0))  # centred, orthonormal columns
    z = (q * math.sqrt(n)).float()  # zero mean, unit (biased) variance, decorrelated
    loss = BarlowTwinsLoss()
    # C = I / (1 + eps): only the eps of the standardisation keeps the loss from being exactly 0.
    assert loss(z, z).item() == pytest.approx(d * (1 - 1 / (1 + eps)) ** 2, abs=1e-8)
    # Perfectly anti-correlated views: C = -I / (1 + eps), so each diagonal term is ~ (1 + 1)^2.
    assert loss(z, -z).item() == pytest.approx(d * (1 + 1 / (1 + eps)) ** 2, rel=1e-5)
    # Standardisation makes the loss invariant to per-dimension scale and shift.
    scale, shift = torch.rand(d) * 5 + 0.5, torch.randn(d) * 10
    assert loss(z * scale + shift, z).item() == pytest.approx(loss(z, z).item(), abs=1e-6)


def test_barlow_twins_identical_correlated_inputs_pay_only_off_diagonal():
    torch.manual_seed(0)
    z = torch.randn(32, 4)
    z[:, 1] = z[:, 0] + 0.1 * z[:, 1]  # two redundant dimensions
    corr = torch.corrcoef(z.T.double())
    off = (corr.pow(2).sum() - corr.diagonal().pow(2).sum()).item()
    lam = 0.0051
    assert BarlowTwinsLoss(lam)(z, z).item() == pytest.approx(lam * off, rel=1e-3)


def test_barlow_twins_validation():
    with pytest.raises(ValueError):
        BarlowTwinsLoss(lambda_offdiag=-1.0)
    with pytest.raises(ValueError, match="at least 2"):
        BarlowTwinsLoss()(torch.randn(1, 3), torch.randn(1, 3))


def test_barlow_twins_two_ranks_match_global_batch():
    """Two gloo processes with half the batch each (under DDP) give the single-process loss and
    gradients w.r.t. inputs and parameters: statistics and C are over the global batch."""
    check_loss_matches_global_batch(BarlowTwinsLoss())
