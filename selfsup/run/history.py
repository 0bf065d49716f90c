"""A resumed run keeps one whole csv/metrics.csv (its W&B run id: selfsup/tracking.py)."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Optional

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only


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
