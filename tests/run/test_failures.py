"""A run under failure (docs/reliability.md): determinism, kill -9 then resume, truncated images, injected NaNs."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, assert_one_line_error, run_script
from PIL import Image

CLASSES = ("cat", "dog", "fish", "owl")


# A run of a few seconds: tiny batches, no kNN at init, no validation, no linear probe, fp32.
FAST = [
    "data.batch_size=8",
    "data.num_workers=0",
    "backbone.cifar_stem=false",
    "eval.linear=null",
    "eval.knn_at_init=false",
    "trainer.enable_progress_bar=false",
    "trainer.precision=32-true",
    "++trainer.limit_val_batches=0",
    "trainer.log_every_n_steps=1",
]


def make_folder_dataset(root: Path, train_per_class: int = 10, val_per_class: int = 5) -> Path:
    rng = np.random.default_rng(0)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                base = np.full((32, 32, 3), 40 + 50 * label, dtype=np.int16)
                image = np.clip(base + rng.integers(-40, 40, size=(32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(image).save(folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("tiny_folder"))


def folder_run(root: Path, *extra: str) -> list[str]:
    return ["data=folder", f"data.root={root}", *FAST, *extra]


# --- kill -9, then the same command again ---------------------------------------------------------
MOCO = [
    "method=mocov2",
    "method.queue_size=4096",
    "method.projector.hidden_dim=64",
    "method.projector.output_dim=32",
    "seed=7",
    "trainer.deterministic=true",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "trainer.max_epochs=3",
    "++trainer.limit_train_batches=3",
    "callbacks.last.every_n_steps=2",
]


TOTAL_STEPS = 9  # checkpoints at steps 2, 4 (mid-epoch), 6, 8 and 9 (the end)


def _train_loss(run_dir: Path) -> list[tuple[int, str]]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        return [(int(row["step"]), row["train/loss"]) for row in csv.DictReader(f) if row.get("train/loss")]


@pytest.fixture(scope="module")
def seeded_runs(tiny_folder, tmp_path_factory) -> list[Path]:
    """Two uninterrupted seeded, deterministic CPU runs of the command the kill test interrupts."""
    dirs = []
    for name in ("a", "b"):
        run_dir = tmp_path_factory.mktemp(f"seeded_{name}") / "run"
        proc = run_script("train.py", folder_run(tiny_folder, *MOCO), run_dir, timeout=600)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        dirs.append(run_dir)
    return dirs


def test_seeded_deterministic_cpu_runs_log_identical_losses(seeded_runs):
    first, second = (_train_loss(d) for d in seeded_runs)
    assert len(first) == TOTAL_STEPS
    assert first == second


def _wait_for_checkpoints(proc, last: Path, count: int, timeout: float = 300) -> None:
    """Poll until `last` has been written `count` times (each save renames a new file over it)."""
    seen, deadline = set(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = last.stat()
            seen.add((stat.st_ino, stat.st_mtime_ns))
        except FileNotFoundError:
            pass
        if len(seen) >= count:
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended (status {proc.returncode}) before its checkpoint #{count}")
        time.sleep(0.01)
    pytest.fail(f"no checkpoint #{count} within {timeout}s")


def _kill_9_after_checkpoints(args: list[str], run_dir: Path, count: int) -> dict:
    """Run train.py, SIGKILL it once it has written last.ckpt `count` times; the checkpoint it left."""
    with open(run_dir.parent / f"{run_dir.name}.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "train.py"), *args, f"hydra.run.dir={run_dir}"],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        try:
            _wait_for_checkpoints(proc, run_dir / "checkpoints" / "last.ckpt", count=count)
        finally:
            proc.kill()  # SIGKILL: no handler, no final save
            proc.wait()
    assert proc.returncode == -9
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


def test_kill_9_then_the_same_command_resumes_where_it_stopped(tiny_folder, seeded_runs, tmp_path):
    runs = tmp_path / "outputs" / "train" / "runs"  # like Hydra's timestamped run dirs
    runs.mkdir(parents=True)
    args = folder_run(tiny_folder, *MOCO)
    first = runs / "2026-01-01_00-00-00_mocov2"
    last = first / "checkpoints" / "last.ckpt"
    killed = _kill_9_after_checkpoints(args, first, count=2)
    step, queue, ptr = (
        killed["global_step"],
        killed["state_dict"]["queue.queue"],
        int(killed["state_dict"]["queue.ptr"]),
    )
    assert 4 <= step < TOTAL_STEPS and set(killed) >= {"optimizer_states", "lr_schedulers", "loops", "callbacks"}
    assert any("key_encoder." in k for k in killed["state_dict"])  # the EMA target
    assert any("rng" in state for state in killed["callbacks"].values())

    second = runs / "2026-01-01_00-05-00_mocov2"  # the same command, run again later
    proc = run_script("train.py", args, second, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert f"resuming {first}" in proc.stdout
    results = json.loads((first / "results.json").read_text())  # written where the run lives
    reference = json.loads((seeded_runs[0] / "results.json").read_text())
    assert results["resumed_from"]["global_step"] == step
    assert results["steps"] == reference["steps"] == TOTAL_STEPS

    # The queue went on from the checkpoint's contents: the rows written since are exactly the
    # resumed steps' keys, every other row is still the checkpoint's.
    final = torch.load(last, map_location="cpu", weights_only=False)["state_dict"]
    keys = (TOTAL_STEPS - step) * 8
    written = (ptr + torch.arange(keys)) % len(queue)
    kept = torch.ones(len(queue), dtype=torch.bool)
    kept[written] = False
    assert int(final["queue.ptr"]) == (ptr + keys) % len(queue)
    assert torch.equal(final["queue.queue"][kept], queue[kept])
    assert not torch.equal(final["queue.queue"][written], queue[written])

    # One metrics.csv, each step at most once: the rows flushed before the checkpoint (the row of
    # the checkpoint's own last batch is logged just after it is saved, and a kill may beat it),
    # then every resumed step.
    logged = [s for s, _ in _train_loss(first)]
    assert logged == sorted(set(logged)) and set(range(step - 1)) | set(range(step, TOTAL_STEPS)) <= set(logged)


def test_resumed_from_an_epoch_end_checkpoint_the_run_is_the_uninterrupted_one(tiny_folder, seeded_runs, tmp_path):
    """Killed after an end-of-epoch checkpoint, the same command again gives the uninterrupted seeded
    run's losses from there on and its final weights, EMA target and queue, bit for bit. (From a
    mid-epoch checkpoint the rest of the epoch sees other batches: the loader's order is not in the
    checkpoint, a limit of Lightning's resume for plain DataLoaders.) Checkpointing once per epoch
    instead of every 2 steps changes what is saved, not what is computed."""
    runs = tmp_path / "runs"
    runs.mkdir()
    args = folder_run(tiny_folder, *[a for a in MOCO if not a.startswith("callbacks.last.")])
    first = runs / "first"
    step = _kill_9_after_checkpoints(args, first, count=1)["global_step"]
    assert step in (3, 6)  # epoch ends: 3 steps per epoch
    proc = run_script("train.py", args, runs / "second", timeout=600)
    assert proc.returncode == 0 and f"resuming {first}" in proc.stdout, (proc.stdout + proc.stderr)[-3000:]

    uninterrupted, resumed = dict(_train_loss(seeded_runs[0])), dict(_train_loss(first))
    assert [resumed[s] for s in range(step, TOTAL_STEPS)] == [uninterrupted[s] for s in range(step, TOTAL_STEPS)]
    final, reference = (
        torch.load(d / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
        for d in (first, seeded_runs[0])
    )
    assert final.keys() == reference.keys()
    assert [name for name, value in reference.items() if not torch.equal(final[name], value)] == []


# --- bad data ---------------------------------------------------------------------------------------
def test_truncated_png_is_named_or_skipped_and_counted(tmp_path):
    root = make_folder_dataset(tmp_path / "data")
    broken = root / "train" / "dog" / "004.png"
    broken.write_bytes(broken.read_bytes()[:60])  # a truncated PNG: header only
    # One loader worker process: the error is raised there and must still reach the user as one line.
    args = [
        "data=folder",
        f"data.root={root}",
        *FAST,
        "data.num_workers=1",
        "++trainer.limit_val_batches=null",
        "trainer.max_epochs=1",
        "++trainer.limit_train_batches=1",
    ]

    proc = run_script("train.py", args, tmp_path / "default")
    line = assert_one_line_error(proc, str(broken), "data.skip_corrupt=true", only_line=False)
    assert line.startswith("error: cannot read image")

    proc = run_script("train.py", [*args, "data.skip_corrupt=true"], tmp_path / "skip")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    results = json.loads((tmp_path / "skip" / "results.json").read_text())
    assert results["skipped_images"] == 1 and results["skipped_image_paths"] == [str(broken)]
    assert f"skipped 1 unreadable images: {broken}" in proc.stdout


# --- numerical faults -------------------------------------------------------------------------------
def test_injected_nan_stops_naming_step_and_terms_and_keeps_the_last_good_checkpoint(tiny_folder, tmp_path):
    args = folder_run(
        tiny_folder,
        "debug=inject_nan",
        "callbacks.last.every_n_steps=2",
        "trainer.max_epochs=2",
        "++trainer.limit_train_batches=4",
    )  # NaN at step 3, checkpoint at step 2
    proc = run_script("train.py", args, tmp_path)
    assert proc.returncode == 3, (proc.stdout + proc.stderr)[-3000:]
    line = assert_one_line_error(
        proc, "non-finite loss at step 3", "loss=nan", "online_linear_loss=", "on_nonfinite=skip", only_line=False
    )
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert str(last) in line
    checkpoint = torch.load(last, map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 2  # nothing saved after the fault
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())
    assert not (tmp_path / "results.json").exists()


def test_on_nonfinite_skip_skips_the_batch_and_finishes(tiny_folder, tmp_path):
    proc = run_script(
        "train.py",
        folder_run(
            tiny_folder,
            "debug=inject_nan",
            "on_nonfinite=skip",
            "trainer.max_epochs=1",
            "++trainer.limit_train_batches=4",
        ),
        tmp_path,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["nonfinite_skipped_batches"] == 1 and results["steps"] == 4
