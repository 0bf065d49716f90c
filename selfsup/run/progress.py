"""How far a run got, as rank 0 saw it, reported the same way under every strategy."""

from __future__ import annotations

import time

import pytorch_lightning as pl

from selfsup.callbacks import ThroughputMonitor
from selfsup.methods.nonfinite import skipped_batches

PREFIX = "progress/"


class RunProgress(pl.Callback):
    """Puts epochs, optimizer steps, whole-run images/s and skipped non-finite batches into
    `trainer.callback_metrics` after every training epoch (not into the loggers). Under ddp_spawn the
    ranks train in child processes and the launching process gets back only the weights and the
    callback metrics: through these, results.json reads the same numbers whichever the strategy.
    Also the seconds spent in the per-epoch kNN monitor, which results.json counts as evaluation."""

    def __init__(self):
        self.monitor_seconds = 0.0
        self._monitor_start = 0.0

    def on_validation_start(self, trainer, pl_module) -> None:
        self._monitor_start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        self.monitor_seconds += time.perf_counter() - self._monitor_start

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        throughput = next((c for c in trainer.callbacks if isinstance(c, ThroughputMonitor)), None)
        pl_module.log_dict(
            {
                f"{PREFIX}epochs": float(trainer.current_epoch + 1),
                f"{PREFIX}steps": float(trainer.global_step),
                f"{PREFIX}images_per_sec": throughput.images_per_sec if throughput is not None else 0.0,
                f"{PREFIX}nonfinite_skipped_batches": float(skipped_batches(pl_module)),
                f"{PREFIX}monitor_seconds": self.monitor_seconds,
            },
            logger=False,
            rank_zero_only=True,
        )


def run_progress(trainer) -> dict:
    """{'epochs', 'steps', 'images_per_sec', 'nonfinite_skipped_batches', 'monitor_seconds'} logged by
    `RunProgress` (zeros when no training epoch ran)."""
    metrics = trainer.callback_metrics
    keys = ("epochs", "steps", "images_per_sec", "nonfinite_skipped_batches", "monitor_seconds")
    values = {key: float(metrics[PREFIX + key]) if PREFIX + key in metrics else 0.0 for key in keys}
    return {
        key: int(value) if key in ("epochs", "steps", "nonfinite_skipped_batches") else value
        for key, value in values.items()
    }
