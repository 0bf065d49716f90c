"""The pairwise margin loss against a naive double loop, and 2 ranks against 1 process on the global batch."""

from __future__ import annotations

import pytest
import torch
from distributed_harness import check_loss_matches_global_batch

from selfsup.losses.pairwise_margin import PairwiseMarginLoss


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def naive_pairwise_margin(z1, z2, margin):
    z1 = torch.nn.functional.normalize(z1, dim=1)
    z2 = torch.nn.functional.normalize(z2, dim=1)
    positives, negatives = [], []
    for i in range(len(z1)):
        for j in range(len(z2)):
            distance = torch.linalg.vector_norm(z1[i] - z2[j])
            if i == j:
                positives.append(distance**2)
            else:
                negatives.append(torch.clamp(margin - distance, min=0) ** 2)
    return torch.stack(positives).mean() + torch.stack(negatives).mean()


@pytest.mark.parametrize("margin", [0.5, 1.0, 1.5])
def test_pairwise_margin_matches_naive_double_loop(margin):
    z1, z2 = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    z2[0] = -z1[0]  # one pair far beyond every margin, one negative pair identical
    z2[2] = 3 * z1[1]
    loss = PairwiseMarginLoss(margin=margin)(z1, z2)
    assert torch.allclose(loss.double(), naive_pairwise_margin(z1, z2, margin), atol=1e-5)


def test_pairwise_margin_gradient_is_finite_for_identical_embeddings():
    z = torch.randn(4, 8, requires_grad=True)
    loss = PairwiseMarginLoss()(z, z[[0, 0, 0, 0]].detach())  # negatives (0, j) at distance 0
    loss.backward()
    assert torch.isfinite(z.grad).all()


def test_pairwise_margin_rejects_nonpositive_margin():
    with pytest.raises(ValueError, match="margin"):
        PairwiseMarginLoss(margin=0.0)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_pairwise_margin_two_ranks_match_global_batch():
    """Columns are the gathered view-2 embeddings of the global batch, the positives at global
    positions (offset by rank): same loss and gradients as one process on 2B. Margin 1.5: most
    negative pairs of 5-d unit vectors are inside it, so the hinge term is live."""
    check_loss_matches_global_batch(PairwiseMarginLoss(margin=1.5))
