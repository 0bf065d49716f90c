"""SimSiam's negative cosine loss with its stop-gradient."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup.losses.negative_cosine import NegativeCosineLoss

pytestmark = pytest.mark.usefixtures("one_thread")


def test_negative_cosine_is_simsiams_d_with_stop_gradient():
    """D(p, z) = -p/||p||_2 . z/||z||_2 (Chen & He 2021, Eq. 1), averaged over the batch; no gradient to z."""
    torch.manual_seed(0)
    p = torch.randn(6, 5, requires_grad=True)
    z = torch.randn(6, 5, requires_grad=True)
    loss = NegativeCosineLoss()(p, z)
    pv, zv = p.detach().double(), z.detach().double()
    expected = (
        sum(
            -float(pv[i] @ zv[i]) / (math.sqrt(float(pv[i] @ pv[i])) * math.sqrt(float(zv[i] @ zv[i])))
            for i in range(6)
        )
        / 6
    )
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    loss.backward()
    assert z.grad is None and p.grad.abs().sum() > 0
    assert NegativeCosineLoss()(pv.float(), pv.float() * 3).item() == pytest.approx(-1.0, abs=1e-6)
