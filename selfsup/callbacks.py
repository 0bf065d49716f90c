"""Callbacks every run gets."""

from __future__ import annotations

import datetime
import math
import sys
import time

import pytorch_lightning as pl


class ThroughputMonitor(pl.Callback):
    """Logs `train/images_per_sec` (source images per second over all ranks, loader waits
    included, validation excluded) each epoch and keeps the whole-run figure for results.json.
    The epoch's figure stays readable (`epoch_images_per_sec`) until the next epoch starts."""

    def __init__(self):
        self.images = 0
        self.seconds = 0.0
        self._epoch_images = 0
        self._epoch_seconds = 0.0
        self._last = 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        self._epoch_images, self._epoch_seconds = 0, 0.0
        self._last = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # Batch end to batch end: the time spent waiting for the loader counts too.
        now = time.perf_counter()
        self._epoch_seconds += now - self._last
        self._last = now
        self._epoch_images += len(batch[1]) * trainer.world_size

    def on_train_epoch_end(self, trainer, pl_module):
        if self._epoch_seconds > 0:
            pl_module.log("train/images_per_sec", self.epoch_images_per_sec, rank_zero_only=True)
        self.images += self._epoch_images
        self.seconds += self._epoch_seconds

    @property
    def epoch_images_per_sec(self) -> float:
        return self._epoch_images / self._epoch_seconds if self._epoch_seconds else 0.0

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


class EpochLines(pl.callbacks.ProgressBar):
    """The progress display off a terminal (a log file, SLURM, nohup, `| cat`), where a live bar
    shows nothing until the end: one plain line per training epoch, on rank 0,
    `epoch 3/8  step 84  loss 4.8123  kNN 0.4120  images/s 812  ETA 0:01:23`
    (loss: the last logged step's; kNN: this epoch's monitor, if it ran; ETA: from the mean time per
    optimizer step so far, validation included)."""

    def __init__(self):
        super().__init__()
        self._enabled = True
        self._start = (0.0, 0)  # (time, global step) when this fit started
        self._knn: float | None = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer, pl_module):
        self._start = (time.perf_counter(), trainer.global_step)

    def on_train_epoch_start(self, trainer, pl_module):
        self._knn = None

    def on_validation_end(self, trainer, pl_module):
        # (after the module's on_validation_epoch_end has logged the monitor)
        knn = trainer.callback_metrics.get("val/knn_top1")
        self._knn = float(knn) if knn is not None and not trainer.sanity_checking else None

    def on_train_epoch_end(self, trainer, pl_module):
        if self._enabled:
            self.print(self.line(trainer), flush=True)

    def line(self, trainer) -> str:
        of = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        parts = [f"epoch {trainer.current_epoch + 1}{of}", f"step {trainer.global_step}"]
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            parts.append(f"loss {float(loss):.4f}")
        if self._knn is not None:
            parts.append(f"kNN {self._knn:.4f}")
        throughput = next((c for c in trainer.callbacks if isinstance(c, ThroughputMonitor)), None)
        if throughput is not None:
            parts.append(f"images/s {throughput.epoch_images_per_sec:.0f}")
        started, first_step = self._start
        done, total = trainer.global_step - first_step, trainer.estimated_stepping_batches
        if done > 0 and math.isfinite(total):
            remaining = (time.perf_counter() - started) / done * max(0, total - trainer.global_step)
            parts.append(f"ETA {datetime.timedelta(seconds=round(remaining))}")
        return "  ".join(parts)


def progress_bar(**rich_options) -> pl.callbacks.ProgressBar:
    """Lightning's Rich bar (`RichProgressBar` below) on a terminal; `EpochLines` when stdout is not one."""
    return RichProgressBar(**rich_options) if sys.stdout.isatty() else EpochLines()


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
