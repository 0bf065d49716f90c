"""EMA targets (selfsup/methods/ema.py): frozen copies, the update against its closed form, the cosine
momentum schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from selfsup.methods import ema


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))


def test_make_target_is_frozen_copy_and_gets_no_grad():
    torch.manual_seed(0)
    online = _net()
    online(torch.randn(8, 4)).sum().backward()  # online now has grads
    target = ema.make_target(online)
    for (name, o), t in zip(online.named_parameters(), target.parameters()):
        assert t is not o and torch.equal(t, o), name
        assert not t.requires_grad and t.grad is None

    online.zero_grad()
    loss = online(torch.randn(8, 4)).sum() + target(torch.randn(8, 4)).sum()
    loss.backward()
    assert all(p.grad is not None for p in online.parameters())
    assert all(not p.requires_grad and p.grad is None for p in target.parameters())


def test_ema_update_matches_closed_form_for_params_and_buffers():
    torch.manual_seed(0)
    online = _net()
    target = ema.make_target(online)
    # Make online and target differ: an optimiser-like perturbation of the weights and a
    # train-mode forward that moves BatchNorm's running statistics and step counter.
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    online.train()
    for _ in range(3):
        online(torch.randn(16, 4) * 3 + 1)
    bn_online, bn_target = online[1], target[1]
    assert not torch.allclose(bn_online.running_mean, bn_target.running_mean)
    assert int(bn_online.num_batches_tracked) == 3 and int(bn_target.num_batches_tracked) == 0

    m = 0.9
    before_t = {k: v.clone() for k, v in target.state_dict().items()}
    online_sd = {k: v.clone() for k, v in online.state_dict().items()}
    ema.update(online, target, m)

    for key, t in target.state_dict().items():
        if t.is_floating_point():
            expected = m * before_t[key] + (1 - m) * online_sd[key]
            torch.testing.assert_close(t, expected, msg=key)
        else:
            assert torch.equal(t, online_sd[key]), key  # num_batches_tracked copied
    assert int(bn_target.num_batches_tracked) == 3
    assert all(not p.requires_grad for p in target.parameters())
    torch.testing.assert_close(online.state_dict(), online_sd)  # online untouched


def test_ema_update_extremes_and_validation():
    torch.manual_seed(0)
    online = _net()
    target = ema.make_target(online)
    with torch.no_grad():
        for p in online.parameters():
            p.mul_(2).add_(1)
    frozen = {k: v.clone() for k, v in target.state_dict().items()}
    ema.update(online, target, 1.0)
    torch.testing.assert_close(target.state_dict(), frozen)
    ema.update(online, target, 0.0)
    torch.testing.assert_close(target.state_dict(), online.state_dict())
    with pytest.raises(ValueError):
        ema.update(online, target, 1.5)
    with pytest.raises(ValueError, match="structure"):
        ema.update(online, nn.Linear(4, 6), 0.5)


def test_cosine_momentum_schedule():
    base = 0.996
    assert ema.cosine_momentum(base, 0, 100) == pytest.approx(base)
    assert ema.cosine_momentum(base, 50, 100) == pytest.approx((1 + base) / 2)
    assert ema.cosine_momentum(base, 25, 100) == pytest.approx(1 - (1 - base) * (math.cos(math.pi / 4) + 1) / 2)
    assert ema.cosine_momentum(base, 100, 100) == pytest.approx(1.0)
    assert ema.cosine_momentum(base, 250, 100) == pytest.approx(1.0)  # clamped
    values = [ema.cosine_momentum(base, s, 100) for s in range(101)]
    assert all(a <= b for a, b in zip(values, values[1:]))
    with pytest.raises(ValueError):
        ema.cosine_momentum(base, 0, 0)
