"""The NNCLR loss against the paper's Eq. 2 and Algorithm 1 (Dwibedi et al. 2021) written as loops, the
nearest-neighbour lookup against brute force, and 2 ranks against 1 process on the global batch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from distributed_harness import check_loss_matches_global_batch
from torch import nn

from selfsup.losses.nnclr import NNCLRLoss, nearest_neighbours

pytestmark = pytest.mark.usefixtures("one_thread")


def _support(size: int, dim: int, seed: int = 1) -> torch.Tensor:
    return F.normalize(torch.randn(size, dim, generator=torch.Generator().manual_seed(seed)), dim=1)


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def _brute_force_neighbour(z: list[float], support: list[list[float]]) -> list[float]:
    best = max(range(len(support)), key=lambda j: _cosine(z, support[j]))
    return support[best]


def test_nearest_neighbour_is_the_most_cosine_similar_support_row():
    torch.manual_seed(0)
    z = torch.randn(9, 6) * 5  # unnormalised: the lookup is by cosine, not by dot product
    support = _support(40, 6)
    expected = [_brute_force_neighbour(row, support.tolist()) for row in z.tolist()]
    assert nearest_neighbours(z, support).tolist() == expected
    # A support set holding a scaled copy of z[3] returns exactly that row for it.
    support[17] = F.normalize(z[3], dim=0)
    assert torch.equal(nearest_neighbours(z, support)[3], support[17])


def _nnclr_by_loops(z1, z2, p1, p2, support, temperature):
    """Algorithm 1: loss = L(NN(z1), p2) / 2 + L(NN(z2), p1) / 2, L(nn, p) = cross-entropy of
    (normalize(nn) @ normalize(p).T / tau) with labels range(n)."""

    def contrast(neighbours, predictions):
        terms = []
        for i, n in enumerate(neighbours):
            logits = [_cosine(n, p) / temperature for p in predictions]
            terms.append(-(logits[i] - math.log(sum(math.exp(x) for x in logits))))
        return sum(terms) / len(terms)

    neighbours = [[_brute_force_neighbour(row, support.tolist()) for row in z.tolist()] for z in (z1, z2)]
    return contrast(neighbours[0], p2.tolist()) / 2 + contrast(neighbours[1], p1.tolist()) / 2


def test_nnclr_loss_matches_algorithm_1_and_reports_the_neighbour_similarity():
    torch.manual_seed(0)
    z1, z2, p1, p2 = (torch.randn(6, 5) for _ in range(4))
    support = _support(30, 5)
    loss, similarity = NNCLRLoss(temperature=0.1)((z1, z2), (p1, p2), support)
    assert loss.item() == pytest.approx(_nnclr_by_loops(z1, z2, p1, p2, support, 0.1), rel=1e-5)
    cosines = [_cosine(row, _brute_force_neighbour(row, support.tolist())) for z in (z1, z2) for row in z.tolist()]
    assert similarity.item() == pytest.approx(sum(cosines) / len(cosines), rel=1e-5)


def test_gradient_flows_through_the_predictions_only():
    torch.manual_seed(0)
    z1, z2, p1, p2 = (torch.randn(4, 5, requires_grad=True) for _ in range(4))
    loss, _ = NNCLRLoss()((z1, z2), (p1, p2), _support(16, 5))
    loss.backward()
    assert z1.grad is None and z2.grad is None  # NN(z) is a support-set row: no path back to z
    assert p1.grad.abs().sum() > 0 and p2.grad.abs().sum() > 0


def test_temperature_must_be_positive():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        NNCLRLoss(temperature=0.0)


class _FixedSupportNNCLR(nn.Module):
    """The harness's projector outputs as both projections and predictions, against a fixed support set
    (the same on every rank, as the method's gathered queue is)."""

    def __init__(self):
        super().__init__()
        self.loss = NNCLRLoss(temperature=0.2)
        self.support = _support(12, 5)

    def forward(self, z1, z2):
        return self.loss((z1, z2), (z1, z2), self.support)[0]


def test_nnclr_loss_on_two_ranks_matches_one_process_on_the_global_batch():
    check_loss_matches_global_batch(_FixedSupportNNCLR())
