"""Downstream evaluation on checkpoints, multiruns and Optuna sweeps, W&B offline, and the local
report: the entry points run as a user runs them, on the bundled digits with a tiny budget."""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from conftest import REPO, compose_train, run_script
from selfsup.errors import UserError

# The brief's tiny budget; the linear probe fits one weight decay (no holdout sweep) to stay quick.
# fp32: with bf16 autocast, 16 px and no CIFAR stem (layer4 sees 1x1 maps), layer4.0.conv1's weights
# intermittently turn non-finite within 2 steps (seen in 3 of ~12 runs under heavy CPU contention).
TINY = [
    "trainer.precision=32-true",
    "data.batch_size=32",
    "trainer.max_epochs=1",
    "++trainer.limit_train_batches=2",
    "++trainer.limit_val_batches=3",
    "eval.knn_at_init=false",
    "trainer.enable_progress_bar=false",
    "backbone.cifar_stem=false",
]
QUICK_LINEAR = ["eval.linear.weight_decays=[1.0e-4]", "eval.linear.max_iter=50"]
# W&B offline, no key, and a dead server address: a network attempt would show up (or stall).
OFFLINE_ENV = {"WANDB_MODE": "offline", "WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_API_KEY": "",
               "WANDB_SILENT": "true"}


def _ok(proc, what: str):
    assert proc.returncode == 0, f"{what} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def _strace_prefix(log: Path) -> list[str]:
    """`strace -e trace=connect` where it is allowed here, to prove no socket leaves the machine."""
    strace = shutil.which("strace")
    if strace is None:
        return []
    probe = subprocess.run([strace, "-f", "-qq", "--seccomp-bpf", "-e", "trace=connect", "-o", os.devnull, "true"],
                           capture_output=True)
    return [strace, "-f", "-qq", "--seccomp-bpf", "-e", "trace=connect", "-o", str(log)] if probe.returncode == 0 else []


def _run_traced(script: str, args: list[str], run_dir: Path, env: dict, trace: Path):
    prefix = _strace_prefix(trace)
    command = [*prefix, sys.executable, str(REPO / script), *args, f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONWARNINGS": "ignore", **env})
    return proc, (trace if prefix else None)


def _offline_run(run_dir: Path) -> Path:
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, f"expected one offline W&B run under {run_dir}/wandb, found {runs}"
    return runs[0]


# --- one pretraining run (W&B offline) and evaluations of its checkpoint -------------------------

@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    run_dir = root / "run"
    env = {**OFFLINE_ENV, "NETRC": str(root / "no-netrc")}  # no API key anywhere
    proc, trace = _run_traced("train.py", [*TINY, "logger=wandb", "tags=[test,tiny]"], run_dir, env, root / "connect.txt")
    _ok(proc, "train.py logger=wandb")
    return {"dir": run_dir, "results": json.loads((run_dir / "results.json").read_text()), "trace": trace, "env": env}


def test_eval_py_reproduces_the_training_runs_linear_top1(pretrained, tmp_path):
    trained = pretrained["results"]
    assert trained["checkpoint"] and Path(trained["checkpoint"]).is_file()
    # The training run embedded in fp32 (TINY): so does eval.py here; then the same features give the same scores.
    assert trained["precision"] == "32-true"
    proc = run_script("eval.py", [f"ckpt_path={trained['checkpoint']}", "eval=linear", "logger=wandb",
                                  "trainer.precision=32-true"], tmp_path, env=pretrained["env"])
    _ok(proc, "eval.py eval=linear")
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
    assert recorded["run"] == {**recorded["run"], "project": "selfsup", "group": "simclr", "job_type": "pretrain",
                               "name": "simclr-digits-resnet18-s42", "tags": ["test", "tiny"]}
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
    proc = run_script("eval.py", [f"ckpt_path={pretrained['results']['checkpoint']}", "eval=finetune",
                                  "eval.finetune.epochs=2", "data=folder", f"data.root={data_root}",
                                  "data.batch_size=16"], run_dir)
    _ok(proc, "eval.py eval=finetune data=folder")
    results = json.loads((run_dir / "results.json").read_text())
    assert results["pretrain_data"] == "digits" and results["data"] == "folder" and results["eval"] == "finetune"
    # Scored on the folder's 16 validation images (not the digits'); that fine-tuning learns is tests/test_eval.py's.
    assert results["finetune_epochs"] == 2 and (results["finetune_top1"] * 16).is_integer()
    assert "linear_top1" not in results
    assert results["knn_top1"] >= 0.9  # red vs blue: separable by colour even on barely trained features (1.0 measured)
    # The pictures of the evaluated features, on the transfer data; curves.png only comes with training.
    drawn = sorted(p.name for p in (run_dir / "images").glob("*.png"))
    assert drawn == ["embedding.png", "neighbours.png"], drawn
    assert f"image: {run_dir / 'images' / 'neighbours.png'}" in proc.stdout


# --- multirun: a method comparison with a failing job, then the report ----------------------------

@pytest.fixture(scope="module")
def method_multirun(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("multirun")
    # lr=-1 fails its config check: jobs 0 and 2 fail first, jobs 1 and 3 must still run.
    proc = run_script("train.py", ["-m", "method=simclr,byol", "optimizer.lr=-1,0.3", *TINY, *QUICK_LINEAR,
                                   f"hydra.sweep.dir={sweep_dir}"])
    _ok(proc, "train.py -m method=simclr,byol")
    return sweep_dir, proc


def _table(report: str) -> list[dict]:
    lines = [line for line in report.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[1:]]


def test_multirun_then_compare_gives_one_row_per_completed_job(method_multirun, tmp_path):
    sweep_dir, _ = method_multirun
    jobs = sorted(p.parent for p in sweep_dir.glob("*/results.json"))
    assert len(jobs) == 4
    completed = [json.loads((j / "results.json").read_text()) for j in jobs]
    completed = [r for r in completed if r.get("status") != "failed"]
    assert sorted(r["method"] for r in completed) == ["byol", "simclr"]

    proc = subprocess.run([sys.executable, "scripts/compare.py", str(sweep_dir), "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    _ok(proc, "scripts/compare.py")
    assert str(tmp_path / "report.md") in proc.stdout and str(tmp_path / "report.png") in proc.stdout
    rows = _table((tmp_path / "report.md").read_text())
    assert len(rows) == 2
    for row, results in zip(sorted(rows, key=lambda r: r["method"]), sorted(completed, key=lambda r: r["method"])):
        assert (row["method"], row["data"], row["backbone"], row["epochs"]) == (
            results["method"], "digits", "resnet18", str(results["epochs"]))
        assert row["kNN top-1"] == f"{results['knn_top1']:.4f}"
        assert row["linear top-1"] == f"{results['linear_top1']:.4f}"
        assert row["images/s"] == f"{results['train_images_per_sec']:.1f}"
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_failed_job_is_recorded_and_does_not_lose_the_others(method_multirun):
    sweep_dir, proc = method_multirun
    failed = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/results.json"))]
    failed = [r for r in failed if r.get("status") == "failed"]
    assert len(failed) == 2 and {r["method"] for r in failed} == {"simclr", "byol"}
    assert all("optimizer.lr must be > 0" in r["error"] and "optimizer.lr=-1" in r["overrides"] for r in failed)
    assert "failed" in proc.stderr
    # The sweep ended with the report (Hydra callback), failed jobs listed.
    report = (sweep_dir / "report.md").read_text()
    assert (sweep_dir / "report.png").is_file()
    assert "2 completed, 2 failed" in report and report.count("optimizer.lr must be > 0") == 2
    assert len(_table(report)) == 2


# --- Optuna -----------------------------------------------------------------------------------

SEARCHES = sorted(p.stem for p in (REPO / "conf" / "hparams_search").glob("*.yaml"))


def test_every_family_has_an_optuna_search():
    families = {"contrastive": {"simclr", "mocov2", "moco"}, "non-contrastive": {"byol", "barlow_twins"},
                "pretext": {"rotnet", "jigsaw", "context_encoder", "colorization"},
                "collapse-free": {"simsiam", "vicreg", "dino"}}
    methods = {entry["override /method"] for s in SEARCHES
               for entry in yaml.safe_load((REPO / "conf/hparams_search" / f"{s}.yaml").read_text())["defaults"]
               if isinstance(entry, dict) and "override /method" in entry}
    assert "simclr_optuna" in SEARCHES
    for family, members in families.items():
        assert methods & members, f"no Optuna search for a {family} method in conf/hparams_search"


@pytest.mark.parametrize("search", SEARCHES)
def test_optuna_search_composes(search, tmp_path):
    cfg = compose_train([f"hparams_search={search}"], tmp_path, hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert "OptunaSweeper" in sweeper._target_ and sweeper.direction == "maximize"
    assert cfg.optimized_metric == "val/knn_top1" and str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    for key in sweeper.params:  # every searched key exists in the composed config
        assert OmegaConf.select(cfg, key, default="<absent>") != "<absent>", f"{search}: {key} is not a config key"


def test_tiny_optuna_sweep_runs_and_writes_best_params(tmp_path):
    proc = run_script("train.py", ["-m", "hparams_search=simclr_optuna", "hydra.sweeper.n_trials=2",
                                   "hydra.sweeper.sampler.n_startup_trials=1", *TINY, "eval.linear=null",
                                   f"hydra.sweep.dir={tmp_path}"])
    _ok(proc, "make sweep (tiny)")
    results = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*/results.json"))]
    assert len(results) == 2 and all(r.get("status") != "failed" for r in results)
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"optimizer.lr", "loss.temperature", "optimizer.weight_decay"}
    # What train.py returned to Optuna: the kNN monitor's val/knn_top1 of each trial.
    assert best["best_value"] == pytest.approx(max(r["metrics"]["val/knn_top1"] for r in results))
    assert (tmp_path / "report.md").is_file() and (tmp_path / "report.png").is_file()
    assert "Optuna best" in (tmp_path / "report.md").read_text()


# --- in-process units ------------------------------------------------------------------------

def test_sgd_linear_solver_agrees_with_lbfgs():
    from selfsup.eval.linear import linear_probe

    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 16, generator=g) * 3
    labels = torch.arange(400) % 4
    x = centers[labels] + torch.randn(400, 16, generator=g)
    kwargs = dict(weight_decays=[1e-4], holdout_fraction=0.0)
    lbfgs = linear_probe(x[:300], labels[:300], x[300:], labels[300:], 4, **kwargs)
    sgd = linear_probe(x[:300], labels[:300], x[300:], labels[300:], 4, solver="sgd", sgd_epochs=30,
                       sgd_batch_size=64, **kwargs)
    assert lbfgs["linear_top1"] > 0.9 and abs(sgd["linear_top1"] - lbfgs["linear_top1"]) <= 0.03
    assert linear_probe(x[:300], labels[:300], x[300:], labels[300:], 4, **kwargs) == lbfgs  # deterministic


def test_wandb_mode_is_offline_unless_opted_in(monkeypatch, tmp_path):
    from selfsup.wandb_mode import wandb_mode

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("NETRC", raising=False)
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    assert wandb_mode(None) == "offline"
    with pytest.raises(UserError, match="no W&B API key"):
        wandb_mode(False)  # online asked, no key: one-line error, never wandb's login prompt
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode(None) == "online" and wandb_mode(True) == "offline"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode(None) == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode(None) == "disabled"
    monkeypatch.delenv("WANDB_API_KEY")
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "y" * 40 + "\n")
    monkeypatch.setenv("WANDB_MODE", "online")
    assert wandb_mode(None) == "online"


def test_metric_value_reads_callback_metrics_then_results():
    from selfsup.run.sweep import metric_value

    assert metric_value({"metrics": {"val/knn_top1": 0.5}, "knn_top1": 0.4}, "val/knn_top1") == 0.5
    assert metric_value({"knn_top1": 0.4}, "val/knn_top1") == 0.4
    assert metric_value({"knn_top1": math.nan}, "val/knn_top1") is None
    assert metric_value({"knn_top1": 0.4}, None) is None


def _read_offline(path: Path) -> dict:
    from selfsup.tracking import read_offline_run

    return read_offline_run(path)


def test_report_lists_a_job_without_results_json(tmp_path):
    """A job killed before writing results.json still appears, as failed."""
    from selfsup.report.write import write_report

    (tmp_path / "0_x" / ".hydra").mkdir(parents=True)
    (tmp_path / "0_x" / ".hydra" / "config.yaml").write_text("method: {name: byol}\ndata: {name: digits}\n")
    (tmp_path / "1_y").mkdir()
    (tmp_path / "1_y" / "results.json").write_text(json.dumps(
        {"method": "simclr", "data": "digits", "backbone": "resnet18", "epochs": 2, "knn_top1": 0.5,
         "linear_top1": 0.75, "train_images_per_sec": 100.0, "train_seconds": 65.0}))
    md, png = write_report(tmp_path)
    report = md.read_text()
    assert "1 completed, 1 failed" in report and "no results.json" in report and "byol" in report
    assert re.search(r"\| simclr \| digits \| resnet18 \| 2 \| 0\.5000 \| 0\.7500 \| 100\.0 \| 1m05s \|", report)
    assert png.stat().st_size > 10_000
