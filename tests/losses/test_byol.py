"""The BYOL loss against its formula."""

from __future__ import annotations

import pytest
import torch

from selfsup.losses.byol import BYOLLoss


def test_byol_loss_matches_formula_and_stops_gradient_to_target():
    torch.manual_seed(0)
    p = torch.randn(6, 5, requires_grad=True)
    z = torch.randn(6, 5, requires_grad=True)
    loss = BYOLLoss()(p, z)

    pv, zv = p.detach(), z.detach()
    expected = sum(2 - 2 * float(pv[i] @ zv[i]) / (float(pv[i].norm()) * float(zv[i].norm())) for i in range(6)) / 6
    assert loss.item() == pytest.approx(expected, rel=1e-5)

    loss.backward()
    assert z.grad is None
    assert p.grad is not None and p.grad.abs().sum() > 0

    same = torch.randn(3, 5)
    assert BYOLLoss()(same, same * 4).item() == pytest.approx(0.0, abs=1e-6)
    assert BYOLLoss()(same, -same).item() == pytest.approx(4.0, abs=1e-5)
