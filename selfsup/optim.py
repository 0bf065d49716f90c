"""Optimizers and LR schedules shared by every method.

Weight decay and LARS adaptation skip biases and normalisation weights (all 1-D parameters), as in
SimCLR/BYOL/Barlow Twins, and a ViT's position embedding and CLS token (MAE, MoCo v3, DINO); the LR
is given per 256 images and scaled by the global batch. (Fine-tuning's layer-wise LR decay is timm's:
selfsup/eval/finetune.py.)"""

from __future__ import annotations

import math

import torch
from torch import nn

from selfsup.errors import UserError


class LARS(torch.optim.Optimizer):
    """SGD with momentum whose per-tensor step is scaled by the trust ratio eta ||w|| / ||g + wd*w||
    (You et al. 2017). Groups with `lars_exclude=True` take plain SGD steps.

    `clip_lr` (solo-learn's `clip_lars_lr`, apex LARC's clip mode): the ratio becomes
    min(ratio / lr, 1), so a tensor's adaptive LR lr * ratio never exceeds the group's LR: the solo-learn
    CIFAR recipes (LARS lr 1.0, eta 0.02) rely on it. (solo-learn's ratio divides by ||g|| + wd ||w||,
    an upper bound of ||g + wd w||; here it is the paper's and BYOL's.)"""

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        clip_lr: bool = False,
    ):
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            trust_coefficient=trust_coefficient,
            clip_lr=clip_lr,
            lars_exclude=False,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            # One fused `_foreach` kernel per operation over the whole group, not a loop per tensor.
            grads = [p.grad for p in params]
            if group["weight_decay"]:
                updates = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            else:
                updates = grads
            if not group["lars_exclude"]:
                w_norms = torch.stack(torch._foreach_norm(params))
                u_norms = torch.stack(torch._foreach_norm(updates))
                trust = torch.where((w_norms > 0) & (u_norms > 0), group["trust_coefficient"] * w_norms / u_norms, 1.0)
                if group["clip_lr"]:
                    trust = (trust / group["lr"]).clamp(max=1.0)
                updates = torch._foreach_mul(updates, list(trust.to(updates[0].dtype).unbind()))
            bufs, fresh = [], []
            for p, update in zip(params, updates):
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = update.clone()
                    fresh.append(True)
                else:
                    fresh.append(False)
                bufs.append(buf)
            if not all(fresh):
                old_bufs = [b for b, f in zip(bufs, fresh) if not f]
                torch._foreach_mul_(old_bufs, group["momentum"])
                torch._foreach_add_(old_bufs, [u for u, f in zip(updates, fresh) if not f])
            torch._foreach_add_(params, bufs, alpha=-group["lr"])
        return loss


def parameter_groups(
    model: nn.Module, weight_decay: float, exclude_bias_and_norm: bool, bias_and_norm_lr_factor: float = 1.0
) -> list[dict]:
    """A decayed group and, with `exclude_bias_and_norm`, a group without weight decay (and LARS
    adaptation): biases and normalisation weights (1-D) and the parameters a module lists in its
    `no_weight_decay()` (timm's convention: a ViT's position embedding and CLS token, MAE's mask token).
    That group's LR is the optimizer's times `bias_and_norm_lr_factor` (optimizer.bias_and_norm_lr_factor;
    Barlow Twins' official code: 0.0048 / 0.2 = 0.024)."""
    if bias_and_norm_lr_factor != 1.0 and not exclude_bias_and_norm:
        raise UserError(
            f"optimizer.bias_and_norm_lr_factor={bias_and_norm_lr_factor} applies to the bias and norm "
            "group: set optimizer.exclude_bias_and_norm=true"
        )
    listed = {
        id(getattr(m, name))
        for m in model.modules()
        if callable(getattr(m, "no_weight_decay", None))
        for name in m.no_weight_decay()
        if isinstance(getattr(m, name, None), nn.Parameter)
    }
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            exempt = param.ndim <= 1 or id(param) in listed
            (no_decay if exclude_bias_and_norm and exempt else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append(
            {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True, "lr_factor": bias_and_norm_lr_factor}
        )
    return groups


def scaled_lr(cfg, global_batch: int) -> float:
    return cfg.lr * global_batch / 256 if cfg.scale_lr else cfg.lr


def build_optimizer(cfg, groups: list[dict], lr: float) -> torch.optim.Optimizer:
    """The optimizer at `lr`; a group's own "lr" stays, a group's "lr_factor" scales `lr` for it."""
    if cfg.lr <= 0:
        raise UserError(f"optimizer.lr must be > 0, got {cfg.lr}")
    for g in groups:
        if "lr_factor" in g:
            g["lr"] = lr * g.pop("lr_factor")
    if cfg.name == "sgd":
        for g in groups:
            g.pop("lars_exclude", None)
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.name == "lars":
        return LARS(groups, lr=lr, momentum=cfg.momentum, trust_coefficient=cfg.trust_coefficient, clip_lr=cfg.clip_lr)
    if cfg.name == "adamw":
        for g in groups:
            g.pop("lars_exclude", None)
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas))
    raise UserError(f"unknown optimizer '{cfg.name}': use optimizer=sgd|lars|adamw")


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, start_factor: float, min_factor: float) -> float:
    """LR multiplier at `step`: linear from start_factor to 1 over warm-up, then cosine to min_factor."""
    if step < warmup_steps:
        return start_factor + (1 - start_factor) * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(cfg, optimizer, total_steps: int, steps_per_epoch: int):
    """The LR multiplier per step for every parameter group, except groups marked `constant_lr`
    (SimSiam's predictor), which keep their initial LR throughout."""
    if cfg.name == "constant":
        schedule = lambda step: 1.0  # noqa: E731
    elif cfg.name == "warmup_cosine":
        warmup = int(cfg.warmup_epochs * steps_per_epoch)

        def schedule(step):
            return warmup_cosine(step, total_steps, warmup, cfg.warmup_start_factor, cfg.min_lr_factor)
    else:
        raise UserError(f"unknown scheduler '{cfg.name}': use scheduler=warmup_cosine|constant")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, [(lambda step: 1.0) if group.get("constant_lr") else schedule for group in optimizer.param_groups]
    )
