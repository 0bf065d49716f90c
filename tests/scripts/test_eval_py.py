"""eval.py on training checkpoints (linear, finetune, transfer) and W&B offline runs that make no network
connection."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, TINY_LINEAR_RUN, assert_succeeded, run_script

# W&B offline, no key, and a dead server address: a network attempt would show up (or stall).
OFFLINE_ENV = {
    "WANDB_MODE": "offline",
    "WANDB_BASE_URL": "http://127.0.0.1:9",
    "WANDB_API_KEY": "",
    "WANDB_SILENT": "true",
}


def _strace_prefix(log: Path) -> list[str]:
    """`strace -e trace=connect` where it is allowed here, to prove no socket leaves the machine."""
    strace = shutil.which("strace")
    if strace is None:
        return []
    probe = subprocess.run(
        [strace, "-f", "-qq", "--seccomp-bpf", "-e", "trace=connect", "-o", os.devnull, "true"], capture_output=True
    )
    return (
        [strace, "-f", "-qq", "--seccomp-bpf", "-e", "trace=connect", "-o", str(log)] if probe.returncode == 0 else []
    )


def _run_traced(script: str, args: list[str], run_dir: Path, env: dict, trace: Path):
    prefix = _strace_prefix(trace)
    command = [*prefix, sys.executable, str(REPO / script), *args, f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **env},
    )
    return proc, (trace if prefix else None)


def _offline_run(run_dir: Path) -> Path:
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, f"expected one offline W&B run under {run_dir}/wandb, found {runs}"
    return runs[0]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    run_dir = root / "run"
    env = {**OFFLINE_ENV, "NETRC": str(root / "no-netrc")}  # no API key anywhere
    proc, trace = _run_traced(
        "train.py", [*TINY_LINEAR_RUN, "logger=wandb", "tags=[test,tiny]"], run_dir, env, root / "connect.txt"
    )
    assert_succeeded(proc, "train.py logger=wandb")
    return {"dir": run_dir, "results": json.loads((run_dir / "results.json").read_text()), "trace": trace, "env": env}


def test_eval_py_reproduces_the_training_runs_linear_top1(pretrained, tmp_path):
    trained = pretrained["results"]
    assert trained["checkpoint"] and Path(trained["checkpoint"]).is_file()
    # The training run embedded in fp32 (TINY_LINEAR_RUN): so does eval.py here; then the same features give the same scores.
    assert trained["precision"] == "32-true"
    proc = run_script(
        "eval.py",
        [f"ckpt_path={trained['checkpoint']}", "eval=linear", "logger=wandb", "trainer.precision=32-true"],
        tmp_path,
        env=pretrained["env"],
    )
    assert_succeeded(proc, "eval.py eval=linear")
    evaluated = json.loads((tmp_path / "results.json").read_text())
    assert evaluated["eval"] == "linear" and evaluated["data"] == trained["data"] == "digits"
    assert evaluated["linear_top1"] == pytest.approx(trained["linear_top1"], abs=1e-6), (evaluated, trained)
    assert evaluated["linear_weight_decay"] == trained["linear_weight_decay"]
    assert evaluated["knn_top1"] == pytest.approx(trained["knn_top1"], abs=1e-6)
    # eval.py's own W&B run: job_type eval, grouped with the pretraining run's method.
    recorded = _read_offline(_offline_run(tmp_path))
    assert recorded["run"]["job_type"] == "eval" and recorded["run"]["group"] == trained["method"]
    assert recorded["summary"]["linear_top1"] == pytest.approx(evaluated["linear_top1"])


def test_wandb_offline_run_has_config_and_summary(pretrained):
    results, run_dir = pretrained["results"], pretrained["dir"]
    recorded = _read_offline(_offline_run(run_dir))
    assert recorded["run"] == {
        **recorded["run"],
        "project": "selfsup",
        "group": "simclr",
        "job_type": "pretrain",
        "name": "simclr-digits-resnet18-s42",
        "tags": ["test", "tiny"],
    }
    config = recorded["config"]  # the whole resolved config, at the top level
    assert config["method"]["name"] == "simclr" and config["data"]["batch_size"] == 32
    assert config["trainer"]["max_epochs"] == 1 and config["run_name"] == "simclr-digits-resnet18-s42"
    summary = recorded["summary"]
    assert summary["val/knn_top1"]["max"] == pytest.approx(results["metrics"]["val/knn_top1"])
    assert summary["val/linear_top1"]["max"] == pytest.approx(results["linear_top1"])
    assert summary["knn_top1"] == pytest.approx(results["knn_top1"])
    assert summary["train_images_per_sec"] == pytest.approx(results["train_images_per_sec"])
    assert "max" in recorded["metrics"]["val/knn_top1"] and "max" in recorded["metrics"]["val/linear_top1"]


def test_wandb_offline_run_makes_no_network_connection(pretrained):
    if pretrained["trace"] is None:
        pytest.skip("strace not usable here: network calls of the offline run not traced")
    connects = [line for line in pretrained["trace"].read_text().splitlines() if "connect(" in line]
    remote = [line for line in connects if "AF_UNIX" not in line and "127.0.0.1" not in line and "::1" not in line]
    assert not remote, f"network connections attempted in offline mode: {remote[:5]}"


def test_eval_finetune_and_transfer_to_another_data_config(pretrained, tmp_path):
    """eval=finetune on the checkpoint, evaluated on an ImageFolder (transfer: not its pretraining data)."""
    from PIL import Image

    data_root = tmp_path / "data"
    generator = torch.Generator().manual_seed(0)
    for split, n in (("train", 24), ("val", 8)):
        for label, channel in (("red", 0), ("blue", 2)):
            (data_root / split / label).mkdir(parents=True)
            for i in range(n):
                pixels = (torch.rand(12, 12, 3, generator=generator) * 80).to(torch.uint8)
                pixels[..., channel] += 150
                Image.fromarray(pixels.numpy()).save(data_root / split / label / f"{i}.png")
    run_dir = tmp_path / "run"
    proc = run_script(
        "eval.py",
        [
            f"ckpt_path={pretrained['results']['checkpoint']}",
            "eval=finetune",
            "eval.finetune.epochs=2",
            "data=folder",
            f"data.root={data_root}",
            "data.batch_size=16",
        ],
        run_dir,
    )
    assert_succeeded(proc, "eval.py eval=finetune data=folder")
    results = json.loads((run_dir / "results.json").read_text())
    assert results["pretrain_data"] == "digits" and results["data"] == "folder" and results["eval"] == "finetune"
    # Scored on the folder's 16 validation images (not the digits'); that fine-tuning learns is tests/eval/test_probes.py's.
    assert results["finetune_epochs"] == 2 and (results["finetune_top1"] * 16).is_integer()
    assert "linear_top1" not in results
    assert results["knn_top1"] >= 0.9  # red vs blue: separable by colour even on barely trained features (1.0 measured)
    # The pictures of the evaluated features, on the transfer data; curves.png only comes with training.
    drawn = sorted(p.name for p in (run_dir / "images").glob("*.png"))
    assert drawn == ["embedding.png", "neighbours.png"], drawn
    assert f"image: {run_dir / 'images' / 'neighbours.png'}" in proc.stdout


def _read_offline(path: Path) -> dict:
    from selfsup.tracking import read_offline_run

    return read_offline_run(path)
