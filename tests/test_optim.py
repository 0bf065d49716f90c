"""Optimisers and schedules (selfsup/optim.py): the fused LARS step and its clipping, parameter groups, warmup +
cosine."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import compose_train
from omegaconf import OmegaConf

from selfsup.optim import build_scheduler


# ---------------------------------------------------------------- fused LARS
def _reference_lars_step(params, state, lr, momentum, weight_decay, trust_coefficient, exclude):
    for p in params:
        update = p.grad + weight_decay * p
        if not exclude:
            w, u = p.norm(), update.norm()
            update = update * (trust_coefficient * w / u if w > 0 and u > 0 else 1.0)
        buf = state.get(p)
        state[p] = update.clone() if buf is None else buf * momentum + update
        p.sub_(lr * state[p])


@pytest.mark.parametrize("excluded_weight_decay", [0.0, 0.05])  # an excluded group decays, without the trust ratio
def test_fused_lars_matches_the_per_tensor_definition(excluded_weight_decay):
    from selfsup.optim import LARS

    torch.manual_seed(0)
    weights = [torch.randn(5, 4), torch.randn(7)]
    norms = [torch.randn(4)]
    ours_w, ours_n = [w.clone() for w in weights], [n.clone() for n in norms]
    opt = LARS(
        [
            {"params": ours_w, "weight_decay": 1e-3},
            {"params": ours_n, "weight_decay": excluded_weight_decay, "lars_exclude": True},
        ],
        lr=0.5,
        momentum=0.9,
        trust_coefficient=0.02,
    )
    state = {}
    for _ in range(4):
        grads = [torch.randn_like(w) for w in weights + norms]
        for p, g in zip(ours_w + ours_n, grads):
            p.grad = g.clone()
        opt.step()
        with torch.no_grad():
            for p, g in zip(weights + norms, grads):
                p.grad = g.clone()
            _reference_lars_step(weights, state, 0.5, 0.9, 1e-3, 0.02, exclude=False)
            _reference_lars_step(norms, state, 0.5, 0.9, excluded_weight_decay, 0.02, exclude=True)
    for a, b in zip(ours_w + ours_n, weights + norms):
        assert torch.allclose(a, b, atol=1e-6)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_warmup_cosine_lr_at_known_steps():
    """2 warm-up epochs of 5 steps from 0.1x, then cosine over the other 10 steps down to 0.01x;
    every parameter group scaled alike, a constant_lr group left alone."""
    cfg = OmegaConf.merge(
        compose_train(["scheduler=warmup_cosine"]).scheduler,
        {"warmup_epochs": 2, "warmup_start_factor": 0.1, "min_lr_factor": 0.01},
    )
    weights = [torch.nn.Parameter(torch.zeros(1)) for _ in range(3)]
    optimizer = torch.optim.SGD(
        [
            {"params": [weights[0]], "lr": 1.0},
            {"params": [weights[1]], "lr": 0.2},
            {"params": [weights[2]], "lr": 0.5, "constant_lr": True},
        ],
        lr=1.0,
    )
    scheduler = build_scheduler(cfg, optimizer, total_steps=20, steps_per_epoch=5)
    lrs = []
    for _ in range(23):
        lrs.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    expected = {0: 0.1, 5: 0.55, 9: 0.91, 10: 1.0, 15: 0.505, 20: 0.01, 22: 0.01}
    for step, factor in expected.items():
        assert lrs[step] == pytest.approx([factor, 0.2 * factor, 0.5]), step
    assert lrs[12][0] == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.2)))
    assert all(a[0] > b[0] for a, b in zip(lrs[10:20], lrs[11:21]))  # decreasing after the warm-up


@pytest.mark.parametrize(
    "lr, expected",
    [
        # ||w|| = 5, ||g|| = 1, eta 0.02: ratio 0.1; at lr 0.05, ratio / lr = 2 is clipped to 1: w - lr * g
        (0.05, [3 - 0.05 * 0.6, 4 - 0.05 * 0.8]),
        # at lr 1.0, ratio / lr = 0.1 stays: w - lr * 0.1 * g, as without clipping
        (1.0, [3 - 0.1 * 0.6, 4 - 0.1 * 0.8]),
    ],
)
def test_lars_clip_lr_step_matches_a_hand_computed_reference(lr, expected):
    from selfsup.optim import LARS

    weight = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))
    weight.grad = torch.tensor([[0.6, 0.8]])
    LARS([weight], lr=lr, momentum=0.9, trust_coefficient=0.02, clip_lr=True).step()
    torch.testing.assert_close(weight.detach(), torch.tensor([expected]))


def test_barlow_twins_biases_and_norms_get_their_own_lr():
    """The official code: LR 0.2 per 256 for the weights, 0.0048 for biases and BN parameters."""
    from selfsup.methods.barlow_twins import BarlowTwins

    assert compose_train(["experiment=barlow_twins_imagenet"]).optimizer.bias_and_norm_lr_factor == 0.024
    cfg = compose_train(
        [
            "method=barlow_twins",
            "data=digits",
            "optimizer=lars",
            "optimizer.bias_and_norm_lr_factor=0.024",
            "method.projector.hidden_dim=32",
            "method.projector.output_dim=32",
        ]
    )
    model = BarlowTwins(cfg)
    optimizer, _ = model.optimizer_and_schedule(1.6, total_steps=10, steps_per_epoch=1)
    lr_of = {
        id(p): group["initial_lr"] for group in optimizer.param_groups for p in group["params"]
    }  # before the schedule
    probe = {id(p) for p in model.online_probe.parameters()}
    for name, param in model.named_parameters():
        if id(param) not in probe:
            assert lr_of[id(param)] == pytest.approx(1.6 * 0.024 if param.ndim == 1 else 1.6), name
