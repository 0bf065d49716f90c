"""Callbacks every run gets."""
from __future__ import annotations

import time

import pytorch_lightning as pl


class ThroughputMonitor(pl.Callback):
    """Logs `train/images_per_sec` (source images per second over all ranks, loader waits
    included, validation excluded) each epoch and keeps the whole-run figure for results.json."""

    def __init__(self):
        self.images = 0
        self.seconds = 0.0
        self._epoch_images = 0
        self._epoch_seconds = 0.0
        self._last = 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        self._last = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # Batch end to batch end: the time spent waiting for the loader counts too.
        now = time.perf_counter()
        self._epoch_seconds += now - self._last
        self._last = now
        self._epoch_images += len(batch[1]) * trainer.world_size

    def on_train_epoch_end(self, trainer, pl_module):
        if self._epoch_seconds > 0:
            pl_module.log("train/images_per_sec", self._epoch_images / self._epoch_seconds, rank_zero_only=True)
        self.images += self._epoch_images
        self.seconds += self._epoch_seconds
        self._epoch_images, self._epoch_seconds = 0, 0.0

    @property
    def images_per_sec(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


class RichProgressBar(pl.callbacks.RichProgressBar):
    """Lightning's Rich progress bar, except that during training it reads the logged metrics only
    every `log_every_n_steps` steps: reading them is a `.item()` per metric, which on a GPU makes the
    host wait for the step to finish every step, so it could no longer queue the next one ahead."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._metrics: dict = {}

    def get_metrics(self, trainer, pl_module):
        if trainer.training and self._metrics and trainer.global_step % trainer.log_every_n_steps:
            return self._metrics
        self._metrics = super().get_metrics(trainer, pl_module)
        return self._metrics


class CpuThreadsPerRank(pl.Callback):
    """DDP on CPU: give each rank its share of the cores (torch would otherwise start one intra-op
    thread per core in every rank and oversubscribe them). Runs in every rank process, spawned or
    re-launched, before the first step."""

    def setup(self, trainer, pl_module, stage):
        import os

        import torch
        from pytorch_lightning.accelerators import CPUAccelerator

        if isinstance(trainer.accelerator, CPUAccelerator) and trainer.num_devices > 1:
            torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // trainer.num_devices))

