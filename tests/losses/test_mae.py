"""The MAE loss scores only the hidden patches."""

from __future__ import annotations

import pytest
import torch

from selfsup.losses.mae import MAELoss
from selfsup.methods.mae import random_masking


@pytest.mark.parametrize("norm_pix_loss", [True, False])
def test_mae_loss_scores_only_hidden_patches(norm_pix_loss):
    torch.manual_seed(0)
    loss_fn = MAELoss(norm_pix_loss=norm_pix_loss)
    pred = torch.randn(2, 16, 12, requires_grad=True)
    patches = torch.randn(2, 16, 12)
    _, _, mask = random_masking(2, 16, 0.75, "cpu")
    loss = loss_fn(pred, patches, mask)
    loss.backward()
    # an independent computation: the mean over hidden patches of each one's mean squared error
    errors = []
    for i, j in mask.nonzero().tolist():
        target = patches[i, j]
        if norm_pix_loss:
            target = (target - target.mean()) / (target.var() + 1e-6).sqrt()
        errors.append(((pred[i, j] - target) ** 2).mean())
    torch.testing.assert_close(loss, torch.stack(errors).mean())
    visible = mask == 0
    assert (pred.grad[visible] == 0).all() and (pred.grad[~visible] != 0).any()
    changed = patches.clone()
    changed[visible] = torch.randn(int(visible.sum()), 12) * 10
    assert torch.equal(loss_fn(pred, changed, mask), loss)
