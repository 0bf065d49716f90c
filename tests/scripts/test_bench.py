"""scripts/bench.py in both modes (tiny) and its bare loop against the Trainer's step."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from conftest import REPO, compose_train
from omegaconf import OmegaConf
from PIL import Image

sys.path.insert(0, str(REPO / "scripts"))


BENCH_FIELDS = (
    "module_images_per_sec",
    "bare_images_per_sec",
    "ratio",
    "loader_images_per_sec",
    "loader_cpu_augment_images_per_sec",
    "loader_on_device_images_per_sec",
    "module_step_ms",
    "bare_step_ms",
    "module_peak_rss_mb",
    "bare_peak_rss_mb",
    "peak_rss_mb",
)


# ---------------------------------------------------------------- the bench, tiny
def test_bench_writes_every_figure(tmp_path, capsys):
    import bench

    report = bench.main(
        [
            "--steps",
            "1",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--batch-size",
            "8",
            "--loader-batches",
            "1",
            "--on-device",
            "--out",
            str(tmp_path),
        ]
    )
    path = tmp_path / "bench.json"
    assert f"bench: {path}" in capsys.readouterr().out
    saved = json.loads(path.read_text())
    assert saved == json.loads(json.dumps(report))
    for field in BENCH_FIELDS:
        assert isinstance(saved[field], (int, float)) and saved[field] > 0, field
    assert saved["config"]["on_device"] and saved["config"]["batch_size"] == 8
    assert saved["config"]["precision"] and saved["machine"]["cpu"]
    assert abs(saved["ratio"] - saved["module_images_per_sec"] / saved["bare_images_per_sec"]) < 1e-2


def _image_folder(root, classes=2, per_class=10, size=20):
    for split in ("train", "val"):
        for c in range(classes):
            (root / split / f"c{c}").mkdir(parents=True)
            for k in range(per_class):
                array = (torch.rand(size, size, 3) * 255).to(torch.uint8).numpy()
                Image.fromarray(array).save(root / split / f"c{c}" / f"{k}.png")
    return root


def test_e2e_bench_times_train_py_and_the_plain_loop(tmp_path, capsys):
    """Both sides run and report images/s and the per-step breakdown; the pipeline side really is
    train.py (its run directory, config and log are there), with its timed window from inside."""
    import bench

    root = _image_folder(tmp_path / "images")
    out = tmp_path / "bench"
    report = bench.main(
        [
            "--e2e",
            "--methods",
            "byol",
            "--root",
            str(root),
            "--steps",
            "2",
            "--warmup",
            "1",
            "--batch-size",
            "4",
            "--resolution",
            "16",
            "--workers",
            "0",
            "--out",
            str(out),
            "trainer.precision=32-true",
        ]
    )
    printed = capsys.readouterr().out
    assert f"bench: {out / 'bench.json'}" in printed and "byol ratio" in printed
    byol = report["methods"]["byol"]
    for side in ("pipeline", "plain"):
        figures = byol[side]
        assert figures["images_per_sec"] > 0 and figures["steps"] == 2
        assert set(figures["ms_per_step"]) == {"data", "forward", "backward", "update", "targets", "framework"}
        assert figures["ms_per_step"]["forward"] > 0 and figures["ms_per_step"]["backward"] > 0
        assert figures["ms_per_step"]["targets"] > 0  # BYOL's EMA update, on both sides
        assert 0 <= figures["cpu_share_used_elsewhere"] <= 1
        assert 0 < figures["median_step_ms"] <= 1000 * figures["seconds"]
        assert figures["loader_workers_cpu_ms_per_step"] == 0  # --workers 0: the process itself is not its child
    assert byol["paired_ratios"] == [round(byol["ratio"], 4)]  # one repeat: its pair is the medians
    assert abs(byol["ratio"] - byol["pipeline"]["images_per_sec"] / byol["plain"]["images_per_sec"]) < 1e-3
    assert byol["pipeline"]["actions_ms_per_step"]  # Lightning's own actions, for a regression to point at
    run_dir = out / "byol" / "pipeline0"
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "train.log").is_file()
    assert report["config"]["batch_size"] == 4 and report["config"]["steps"] == 2
    assert json.loads((out / "bench.json").read_text()) == json.loads(json.dumps(report))


@pytest.mark.parametrize("method", ["byol", "mocov2"])
def test_bare_loop_step_is_the_trainer_step(method, tmp_path):
    """The bench's bare loop cannot drift from what is trained: one step of it and one step of the
    Trainer, from the same weights on the same batch, leave the same weights, EMA target and queue."""
    import pytorch_lightning as pl
    from bench_common import BareLoop
    from bench_step import FixedBatches
    from hydra.utils import get_class

    from selfsup.run.launch import build_trainer

    cfg = compose_train(
        [
            f"method={method}",
            "data.batch_size=8",
            "trainer.precision=32-true",
            "trainer.max_steps=1",
            "scheduler=constant",  # the full LR from the first step: an update large enough to compare
            "trainer.limit_val_batches=0",
            "trainer.check_val_every_n_epoch=1",
            "trainer.enable_progress_bar=false",
            "logger=csv",
            "method.queue_size=64" if method == "mocov2" else "method.momentum=0.9",
            "data.num_classes=10",
            "data.resolution=16",
            "images=false",
        ],
        tmp_path,
    )
    OmegaConf.resolve(cfg)
    torch.manual_seed(0)
    views = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]
    batch = (views, torch.randint(0, 10, (8,)))
    models = []
    for _ in range(2):
        torch.manual_seed(1)
        models.append(get_class(cfg.method._target_)(cfg))
    by_trainer, by_bare = models
    trainer = build_trainer(cfg)
    trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, pl.callbacks.ModelCheckpoint)]
    trainer.fit(by_trainer, train_dataloaders=FixedBatches(batch, 1))
    loop = BareLoop(cfg, by_bare, torch.device("cpu"), total_steps=1, steps_per_epoch=1)
    loop.start()
    loop.step(*batch)
    trained, bare = by_trainer.state_dict(), by_bare.state_dict()
    assert trained.keys() == bare.keys()
    for key in trained:
        assert torch.allclose(trained[key].float(), bare[key].float(), atol=1e-5), key
    torch.manual_seed(1)
    start = get_class(cfg.method._target_)(cfg).state_dict()
    for state in (trained, bare):  # the step and the EMA update ran (on both sides)
        changed = {k.split(".")[0] for k in state if not torch.allclose(state[k].float(), start[k].float())}
        assert {"backbone", "online_probe", by_bare.target_name} <= changed, changed
    if method == "mocov2":
        assert "queue" in changed
