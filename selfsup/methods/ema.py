"""Exponential-moving-average targets: the MoCo key encoder and the BYOL target network.

Both methods keep a slow copy of the online network that never receives gradients and is pulled
towards the online weights after every optimiser step; this is the one implementation they share.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def make_target(online: nn.Module) -> nn.Module:
    """A frozen deep copy of `online`: it starts identical and only ever changes through `update`."""
    target = copy.deepcopy(online)
    target.requires_grad_(False)
    for p in target.parameters():
        p.grad = None  # deepcopy would otherwise carry over stale online grads
    return target


@torch.no_grad()
def update(online: nn.Module, target: nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online, in place.

    Floating-point buffers (BatchNorm running_mean / running_var) are averaged like parameters so
    the target's normalisation statistics track its weights; integer buffers (num_batches_tracked)
    are copied. Each group is one fused `_foreach` kernel launch rather than a per-tensor loop.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"EMA momentum must be in [0, 1], got {momentum}")
    online_params, target_params = list(online.parameters()), list(target.parameters())
    online_buffers, target_buffers = list(online.buffers()), list(target.buffers())
    if len(online_params) != len(target_params) or len(online_buffers) != len(target_buffers):
        raise ValueError("online and target modules differ in structure; build the target with make_target")

    float_pairs = [(t, o) for t, o in zip(target_buffers, online_buffers) if t.is_floating_point()]
    other_pairs = [(t, o) for t, o in zip(target_buffers, online_buffers) if not t.is_floating_point()]
    lerp_targets = target_params + [t for t, _ in float_pairs]
    lerp_sources = online_params + [o for _, o in float_pairs]
    if lerp_targets:
        # lerp(t, o, w) = t + w * (o - t) = momentum * t + (1 - momentum) * o with w = 1 - momentum
        torch._foreach_lerp_(lerp_targets, lerp_sources, 1.0 - momentum)
    if other_pairs:
        torch._foreach_copy_([t for t, _ in other_pairs], [o for _, o in other_pairs])


def cosine_momentum(base: float, step: int, total_steps: int) -> float:
    """BYOL schedule: 1 - (1 - base) * (cos(pi * step / total) + 1) / 2, from `base` at step 0 to
    1.0 at `total_steps` (and beyond: step is clamped), so the target freezes as training ends."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}")
    step = min(max(step, 0), total_steps)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * step / total_steps) + 1.0) / 2.0
