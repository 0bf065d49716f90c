"""Helpers of the data=shards tests: scripts/make_shards.py's main in-process; shards whose labels are the
images' ids, so the labels of a batch name the samples it holds; and a callback that records them for
train.py runs under test (`+callbacks.record._target_=run.shard_ids.RecordBatchLabels`, with tests/ on
PYTHONPATH): `<global step> <labels>` per training step, appended before the step runs and flushed, so
the record survives a kill -9; under DDP each rank writes its own file, `<path>.rank<global rank>`."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from PIL import Image


def make_shards(argv: list[str]) -> None:
    """`python scripts/make_shards.py argv...` without a new interpreter (its prints go to the caller's stdout)."""
    spec = importlib.util.spec_from_file_location(
        "make_shards", Path(__file__).parents[2] / "scripts" / "make_shards.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(argv)


def write_id_shards(root: Path, train: int, val: int, side: int = 32) -> Path:
    from selfsup.data.shards import write_meta, write_split

    rng = np.random.default_rng(0)

    def images(count):
        for i in range(count):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buffer, format="PNG")
            yield buffer.getvalue(), i

    labels = {"train": write_split(images(train), root / "train"), "val": write_split(images(val), root / "val")}
    write_meta(root, [str(i) for i in range(train)], labels, source="test")
    return root


class RecordBatchLabels(pl.Callback):
    def __init__(self, path: str):
        self.path = path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        _, labels = batch
        path = self.path if trainer.world_size == 1 else f"{self.path}.rank{trainer.global_rank}"
        with open(path, "a") as f:
            f.write(f"{trainer.global_step} {' '.join(str(int(label)) for label in labels)}\n")


def read_record(path) -> list[tuple[int, list[int]]]:
    """(global step, labels) per recorded training step, in the order they ran."""
    steps = []
    for line in open(path).read().splitlines():
        step, *labels = line.split()
        steps.append((int(step), [int(label) for label in labels]))
    return steps
