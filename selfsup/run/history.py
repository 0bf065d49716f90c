"""A resumed run keeps one history: the same W&B run and one whole csv/metrics.csv."""
from __future__ import annotations

import csv
import os
import uuid
from pathlib import Path
from typing import Optional

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only

WANDB_ID_FILE = "wandb_run_id"


def wandb_run_id(run_dir: str) -> str:
    """The W&B run id of this run directory, created once: a resumed run logs to the same W&B run."""
    path = Path(run_dir) / WANDB_ID_FILE
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:12]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n")
    return run_id


def logger_kwargs(logger_cfg, run_dir: str) -> dict:
    """Extra arguments for a logger config: the stable W&B id (resume='allow' is WandbLogger's default)."""
    if "wandb" in str(logger_cfg.get("_target_", "")).lower() and not logger_cfg.get("id"):
        if rank_zero_only.rank == 0:  # only rank 0 logs to W&B (and creates the id file)
            return {"id": wandb_run_id(run_dir)}
    return {}


class CsvHistory:
    """Lightning's CSVLogger deletes an existing metrics.csv when it starts; on resume, keep the rows
    logged before the checkpoint aside and put them back in front of the new ones after fit."""

    STASH = "metrics.before_resume.csv"

    def __init__(self, loggers, resumed_step: Optional[int]):
        self.files = []
        if resumed_step is None or rank_zero_only.rank != 0:  # only rank 0 writes the CSV
            return
        for logger in loggers:
            if isinstance(logger, pl.loggers.CSVLogger):
                metrics = Path(logger.log_dir) / "metrics.csv"
                stash = metrics.with_name(self.STASH)
                rows = _read_rows(stash) + _read_rows(metrics)
                _write_rows(stash, [r for r in rows if _step(r) < resumed_step])
                if metrics.exists():
                    metrics.unlink()
                self.files.append((metrics, stash))

    def merge(self) -> None:
        for metrics, stash in self.files:
            if stash.exists():
                _write_rows(metrics, _read_rows(stash) + _read_rows(metrics))
                stash.unlink()


def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_rows(path: Path, rows: list[dict]) -> None:
    fields = list(dict.fromkeys(key for row in rows for key in row))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _step(row: dict) -> float:
    try:
        return float(row.get("step") or 0)
    except ValueError:
        return 0.0
