"""Semantic checks that a schema cannot express, run before anything is built, so a mistake
costs a second and one line instead of a crash on day two."""
from __future__ import annotations

from selfsup.errors import UserError


def check_train_config(cfg) -> None:
    positive = {
        "optimizer.lr": cfg.optimizer.lr,
        "data.batch_size": cfg.data.batch_size,
    }
    if cfg.trainer.max_steps == -1:
        positive["trainer.max_epochs"] = cfg.trainer.max_epochs
    if "temperature" in cfg.loss:
        positive["loss.temperature"] = cfg.loss.temperature
    for key, value in positive.items():
        if value is None or value <= 0:
            raise UserError(f"{key} must be > 0, got {value}: set {key}=<positive value>")
    if cfg.data.resolution is not None and cfg.data.resolution < 8:
        raise UserError(f"data.resolution={cfg.data.resolution} is too small: use at least 8 pixels")
