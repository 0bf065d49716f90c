"""data=shards through train.py: a run on shards of the CIFAR sample ends in results.json, and a run killed
with SIGKILL mid-epoch, started again with the same command, trains on exactly the batches an
uninterrupted run sees (the streaming loader's position is in the checkpoint)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, TINY_RUN, train
from run.shard_ids import make_shards, read_record, write_id_shards

IMAGES, VAL_IMAGES, BATCH, EPOCHS, CHECKPOINT_EVERY = 32, 16, 8, 2, 2
STEPS = EPOCHS * IMAGES // BATCH  # 8: 4 per epoch


def test_cifar_sample_shards_train_to_results(cifar_subset, tmp_path, capsys):
    shards = tmp_path / "shards"
    make_shards(["data=folder", f"data.root={cifar_subset}", f"out={shards}", "limit=200"])
    assert f"wrote {shards}: train 200, val 200 images, 10 classes" in capsys.readouterr().out
    results = train(["data=shards", f"data.root={shards}", *TINY_RUN, "data.num_workers=1"], tmp_path / "run")
    assert results["data"] == "shards" and results["steps"] == 2
    assert 0.0 <= results["knn_top1"] <= 1.0 and (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


@pytest.fixture(scope="module")
def id_shards(tmp_path_factory) -> Path:
    return write_id_shards(tmp_path_factory.mktemp("id_shards"), IMAGES, VAL_IMAGES)


def _command(shards: Path, record: Path) -> list[str]:
    return [
        "data=shards",
        f"data.root={shards}",
        f"data.batch_size={BATCH}",
        "data.num_workers=2",
        "seed=3",
        f"trainer.max_epochs={EPOCHS}",
        f"callbacks.last.every_n_steps={CHECKPOINT_EVERY}",
        "++trainer.limit_val_batches=0",
        "eval.linear=null",
        "eval.knn_at_init=false",
        "trainer.enable_progress_bar=false",
        "backbone.cifar_stem=false",
        "trainer.precision=32-true",
        "images=false",
        "+callbacks.record._target_=run.shard_ids.RecordBatchLabels",
        f"+callbacks.record.path={record}",
    ]


ENV = {
    **os.environ,
    "PYTHONWARNINGS": "ignore",
    "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
}


def _run(args: list[str], run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args, f"hydra.run.dir={run_dir}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
    )


def _kill_9_mid_epoch(args: list[str], run_dir: Path, record: Path, after_step: int) -> None:
    """Start train.py and SIGKILL it once it has started step `after_step` (checkpoints at every
    CHECKPOINT_EVERY steps, so last.ckpt is mid-epoch and the steps after it are lost)."""
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *args, f"hydra.run.dir={run_dir}"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if record.is_file() and any(step >= after_step for step, _ in read_record(record)):
                break
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -9, "the run ended before it could be killed"


def test_kill_9_mid_epoch_then_same_command_continues_on_the_next_batches(id_shards, tmp_path):
    uninterrupted = tmp_path / "uninterrupted.txt"
    proc = _run(_command(id_shards, uninterrupted), tmp_path / "a")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    expected = dict(read_record(uninterrupted))
    assert sorted(expected) == list(range(STEPS))
    for epoch in range(EPOCHS):  # each epoch: every image at most once, in a new order
        ids = [i for step in range(epoch * STEPS // EPOCHS, (epoch + 1) * STEPS // EPOCHS) for i in expected[step]]
        assert len(ids) == len(set(ids)) == IMAGES
    assert expected[0] != expected[STEPS // EPOCHS]

    record, run_dir = tmp_path / "killed.txt", tmp_path / "b"
    _kill_9_mid_epoch(_command(id_shards, record), run_dir, record, after_step=3)  # last.ckpt at step 2
    before = read_record(record)
    proc = _run(_command(id_shards, record), run_dir)  # the same command: resume=auto
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    runs = read_record(record)[len(before) :]
    resumed_at = runs[0][0]
    assert 0 < resumed_at < STEPS // EPOCHS and resumed_at % CHECKPOINT_EVERY == 0, resumed_at  # mid-epoch 0
    assert json.loads((run_dir / "results.json").read_text())["resumed_from"] is not None
    assert [step for step, _ in runs] == list(range(resumed_at, STEPS))
    for step, labels in before + runs:  # before the kill, the steps redone after it, and the rest
        assert labels == expected[step], f"step {step}: {labels} != {expected[step]}"
