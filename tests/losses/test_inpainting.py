"""The context encoder's inpainting loss: only the redrawn region counts, the visible rim weighted 10x."""

from __future__ import annotations

import pytest
import torch

from selfsup.data.pretext import (
    make_mask,
)
from selfsup.losses.inpainting import InpaintingLoss


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_inpainting_loss_ignores_pixels_outside_the_redrawn_region_in_value_and_gradient():
    target = torch.rand(2, 3, 32, 32)
    mask = make_mask("random_block", 2, 32, 32, "cpu")
    loss_fn = InpaintingLoss(overlap=2)
    pred = torch.rand(2, 3, 32, 32, requires_grad=True)
    loss = loss_fn(pred, target, mask)
    loss.backward()
    outside = (loss_fn.pixel_weights(mask) == 0).expand_as(pred)
    assert (pred.grad[outside] == 0).all() and (pred.grad[~outside] != 0).all()

    changed_pred = torch.where(outside, torch.full_like(target, float("nan")), pred.detach())
    changed_target = torch.where(outside, torch.full_like(target, float("inf")), target)
    assert torch.equal(loss_fn(changed_pred, changed_target, mask), loss.detach())


def test_context_encoder_weights_the_visible_rim_it_redraws_10x():
    """Pathak's train.lua: the hole is filled overlapPred px inside the predicted region, and the L2
    weight map gives that visible border 10x the hole's weight; the loss averages over the region."""
    from selfsup.data.pretext import make_mask
    from selfsup.losses.inpainting import InpaintingLoss

    loss_fn = InpaintingLoss(overlap=2, overlap_weight=10.0)
    mask = make_mask("central", 1, 16, 16, "cpu")  # 8x8 hole at [4, 12)
    expected = torch.zeros(16, 16)
    expected[2:14, 2:14] = 10.0  # the 2-px visible rim around the hole
    expected[4:12, 4:12] = 1.0  # the hole
    assert torch.equal(loss_fn.pixel_weights(mask)[0, 0], expected)
    target, pred = torch.zeros(1, 1, 16, 16), torch.ones(1, 1, 16, 16)
    assert loss_fn(pred, target, mask).item() == pytest.approx((64 + 10 * 80) / 144)
