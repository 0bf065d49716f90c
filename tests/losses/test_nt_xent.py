"""SimCLR's NT-Xent loss against hand computations and explicit sums, and 2 ranks against 1 process on the global
batch."""

from __future__ import annotations

import math

import pytest
import torch
from distributed_harness import check_loss_matches_global_batch

from selfsup.losses.nt_xent import NTXentLoss


def test_nt_xent_orthogonal_identical_views_hand_computed():
    # Views a, b and their copies a', b': each row has one positive at cosine 1 and two
    # negatives at cosine 0, so every row's loss is -log(e / (e + 2)).
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = NTXentLoss(temperature=1.0)(z, z.clone())
    assert loss.item() == pytest.approx(math.log(1 + 2 / math.e), abs=1e-6)


def test_nt_xent_general_case_against_explicit_sums():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # normalised: (1,0), (0,1)
    z2 = torch.tensor([[3.0, 4.0], [0.8, 0.6]])  # normalised: (.6,.8), (.8,.6)
    t = 0.5
    # Cosines between the four normalised vectors a, b | a', b'.
    a, b, a2, b2 = (1, 0), (0, 1), (0.6, 0.8), (0.8, 0.6)
    dot = lambda u, v: u[0] * v[0] + u[1] * v[1]  # noqa: E731
    views = [a, b, a2, b2]
    positives = {0: 2, 1: 3, 2: 0, 3: 1}
    expected = 0.0
    for i, u in enumerate(views):
        denominator = sum(math.exp(dot(u, v) / t) for j, v in enumerate(views) if j != i)
        expected += -math.log(math.exp(dot(u, views[positives[i]]) / t) / denominator)
    expected /= 4
    assert NTXentLoss(temperature=t)(z1, z2).item() == pytest.approx(expected, abs=1e-6)


def test_nt_xent_gradient_flows_to_both_views_and_rejects_bad_temperature():
    z1, z2 = torch.randn(8, 16, requires_grad=True), torch.randn(8, 16, requires_grad=True)
    NTXentLoss(0.2)(z1, z2).backward()
    assert z1.grad.abs().sum() > 0 and z2.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(0.0)


def test_nt_xent_two_ranks_match_global_batch():
    """Negatives gathered with gradient, positives at global positions (labels offset by rank):
    same loss and gradients (inputs and DDP-averaged parameters) as one process on 2B."""
    check_loss_matches_global_batch(NTXentLoss(temperature=0.5))
