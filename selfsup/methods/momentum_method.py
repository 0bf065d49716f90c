"""What the momentum methods (MoCo, BYOL, ...) share on top of `SSLMethod`: an EMA target copy of the
online encoder, pulled towards it once after every optimiser step, with a constant or cosine
(base -> 1) momentum."""

from __future__ import annotations

import math

import torch
from torch import nn

from selfsup.errors import UserError
from selfsup.methods.base import SSLMethod
from selfsup.methods.ema import cosine_momentum, make_target, update


class MomentumMethod(SSLMethod):
    """Reads `method.momentum` (the base momentum) and `method.momentum_cosine` (schedule it from
    base to 1 over `trainer.estimated_stepping_batches`, BYOL; else constant, MoCo). A subclass
    builds its online heads, then calls `make_momentum_target()`: the frozen copy of
    `online_encoder()` (backbone and projector unless overridden) under the name `target_name`; its
    first module is the momentum backbone, which `method.eval_encoder=momentum` evaluates and exports."""

    target_name = "target_encoder"  # the target's attribute, hence its state_dict prefix
    encoders = ("online", "momentum")  # method.eval_encoder: which one is evaluated and exported

    @classmethod
    def encoder_prefix(cls, encoder: str) -> str:
        return f"{cls.target_name}.0." if encoder == "momentum" else super().encoder_prefix(encoder)

    def start_from(self, weights) -> None:
        super().start_from(weights)
        for online, target in self.momentum_pairs():  # the target starts as a copy of the online encoder
            update(online, target, 0.0)

    def evaluated_backbone(self) -> nn.Module:
        return getattr(self, self.target_name)[0] if self.cfg.method.eval_encoder == "momentum" else self.backbone

    def __init__(self, cfg):
        super().__init__(cfg)
        self._ema_step = 0  # trainer.global_step at the last EMA update

    @classmethod
    def check_config(cls, cfg, world_size: int) -> None:
        super().check_config(cfg, world_size)
        if not 0.0 <= cfg.method.momentum <= 1.0:
            raise UserError(f"method.momentum must be in [0, 1], got {cfg.method.momentum}")

    def online_encoder(self) -> nn.Module:
        """What the target copies and follows. Built on the fly, not stored: an attribute would
        register the backbone twice in state_dict."""
        return nn.Sequential(self.backbone, self.projector)

    def make_momentum_target(self) -> None:
        self.add_module(self.target_name, make_target(self.online_encoder()))

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(online, target) pairs, in matching structure, to update after each optimiser step."""
        return [(self.online_encoder(), getattr(self, self.target_name))]

    def momentum_at(self, step: int) -> float:
        """The momentum of the EMA update that follows optimiser step `step` (0-based)."""
        base = self.cfg.method.momentum
        if not self.cfg.method.momentum_cosine:
            return base
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):  # max_epochs=-1 and max_steps=-1: no end to anneal towards
            return base
        return cosine_momentum(base, step, max(1, int(total)))

    def current_momentum(self) -> torch.Tensor:
        """For logging as train/momentum: the momentum the update after this step will use."""
        if self._trainer is None:  # a bare module (tests, bench): no schedule to be at
            return torch.tensor(self.cfg.method.momentum)
        return torch.tensor(self.momentum_at(self.trainer.global_step))

    def on_train_start(self) -> None:
        self._ema_step = self.trainer.global_step  # also right after resuming from a checkpoint

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        step = self.trainer.global_step
        if step == self._ema_step:  # gradient accumulation: no optimiser step after this batch
            return
        momentum = self.momentum_at(step - 1)
        for online, target in self.momentum_pairs():
            update(online, target, momentum)
        self._ema_step = step
