"""DINO (Caron et al. 2021), on a ResNet: self-distillation with no labels. The student (backbone +
DINO head) sees every view, global and local; the teacher, an EMA of the student, sees the global views
only; the student's output distribution on each view matches the teacher's on every other view. The
teacher's outputs are centred and sharpened, which is what keeps them from collapsing."""

from __future__ import annotations

import torch
from torch import nn

from selfsup.data.transforms import global_view_count
from selfsup.errors import UserError
from selfsup.losses.dino import DINOLoss
from selfsup.methods.base import StepOutput, forward_by_resolution
from selfsup.methods.momentum_method import MomentumMethod
from selfsup.models.heads import DINOHead


class DINO(MomentumMethod):
    losses = (DINOLoss,)
    target_name = "teacher"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.head = DINOHead(self.feature_dim, **cfg.method.head)
        self.make_momentum_target()  # self.teacher: EMA of backbone + head
        self.global_views = global_view_count(cfg.augmentation)
        self._steps_per_epoch: int | None = None  # optimiser steps; known once training starts

    @classmethod
    def check_config(cls, cfg, world_size: int) -> None:
        super().check_config(cfg, world_size)
        views = len(cfg.augmentation.views)
        if views < 2 or global_view_count(cfg.augmentation) < 1:
            raise UserError(
                f"DINO needs at least 2 views, at least one of them global (augmentation.views has "
                f"{views}): use augmentation=multicrop"
            )

    def online_encoder(self) -> nn.Module:
        return nn.Sequential(self.backbone, self.head)  # the student

    def on_train_start(self) -> None:
        super().on_train_start()
        trainer = self.trainer
        self._steps_per_epoch = max(1, trainer.num_training_batches // trainer.accumulate_grad_batches)

    def _epoch(self) -> float:
        """Training progress in (fractional) epochs, for the teacher temperature's warm-up."""
        if self._steps_per_epoch is None:
            return float(self.current_epoch)
        return self.global_step / self._steps_per_epoch

    def training_loss(self, views: list[torch.Tensor]) -> StepOutput:
        features = forward_by_resolution(self.backbone, views)  # one backbone forward per resolution
        embeddings = self.head.embed(torch.cat(features))
        student = self.head.last_layer(embeddings).chunk(len(views))
        with torch.no_grad():
            teacher = self.teacher(torch.cat(views[: self.global_views])).chunk(self.global_views)
        temperature = self.loss_fn.teacher_temperature_at(self._epoch())
        loss, diagnostics = self.loss_fn(list(student), list(teacher), temperature)
        logs = {f"dino_{name}": value for name, value in diagnostics.items()}
        logs.update(dino_teacher_temperature=torch.tensor(temperature), momentum=self.current_momentum())
        return StepOutput(loss=loss, features=features[0], logs=logs, embeddings=embeddings[: len(views[0])])

    def on_before_optimizer_step(self, optimizer) -> None:
        super().on_before_optimizer_step(optimizer)
        # The paper freezes the last layer during the first epoch: it stabilises the start of training.
        if self.current_epoch < self.cfg.method.freeze_last_layer_epochs:
            for param in self.head.last_layer.parameters():
                param.grad = None
