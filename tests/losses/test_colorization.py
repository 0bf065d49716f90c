"""The colorization loss: 313-bin soft targets, class rebalancing and annealed-mean decoding."""
from __future__ import annotations

import torch

from selfsup.losses.colorization import ColorizationLoss


def test_colorization_classification_soft_target_rebalancing_and_decoding():
    loss_fn = ColorizationLoss(kind="classification")
    n = loss_fn.bins_per_axis
    assert loss_fn.num_outputs == n * n == 484
    common, rare = torch.tensor([5.0, 5.0]), torch.tensor([45.0, -35.0])   # bin centres
    ab = common.view(1, 2, 1, 1).repeat(1, 1, 4, 4)
    ab[0, :, 0, 0] = rare                                                    # 1 pixel in 16
    index = lambda c: int(((c[0] + 110) // 10) * n + (c[1] + 110) // 10)  # noqa: E731
    right = torch.full((1, n * n, 4, 4), -10.0)
    right[0, index(common)] = 10.0
    right[0, index(rare), 0, 0], right[0, index(common), 0, 0] = 10.0, -10.0
    wrong = torch.roll(right, shifts=1, dims=1)
    assert loss_fn(right, ab) < loss_fn(wrong, ab)
    weights = loss_fn.rebalancing_weights()
    assert weights[index(rare)] > 2 * weights[index(common)]                 # rare colours weigh more
    decoded = loss_fn.decode(right)
    assert torch.allclose(decoded[0, :, 1, 1], common, atol=0.5) and torch.allclose(decoded[0, :, 0, 0], rare, atol=0.5)
