"""Bad inputs end in one actionable `error:` line before anything heavy: no traceback, no training
step, no kNN at init. Most cases run in-process (compose, then the checks train.py runs, then the
pipeline up to training, which the test forbids); a few run the entry points as a user does. Also:
a sweep whose every job fails exits non-zero, the multirun report (seeds, fitted axis), the CLI."""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.error

import pytest
import torch

from conftest import CIFAR_SUBSET, REPO, compose_train, run_script
from selfsup.errors import UserError, config_error_message

FAST = ["resume=never", "images=false", "eval.knn_at_init=true", "data.num_workers=0"]


def start_run(overrides: list[str], tmp_path) -> None:
    """What train.py runs (checks, then `pretrain`) on a CPU-only machine, with training and the
    kNN at init replaced by a failure: a bad input must be refused before either."""
    from selfsup.checks import check_train_config
    from selfsup.run import pipeline

    def too_late(*args, **kwargs):
        raise AssertionError("the run got past the checks: kNN at init or training started")

    mp = pytest.MonkeyPatch()
    mp.setattr(torch.cuda, "is_available", lambda: False)
    mp.setattr(pipeline, "evaluate_backbone", too_late)
    mp.setattr(pipeline.pl.Trainer, "fit", too_late)
    try:
        cfg = compose_train([*FAST, *overrides], tmp_path)
        check_train_config(cfg)
        pipeline.pretrain(cfg)
    finally:
        mp.undo()


def _no_network(*args, **kwargs):
    raise urllib.error.URLError("[Errno -2] Name or service not known")


BAD_RUNS = {  # overrides -> what the one line must say
    "devices -2": (["trainer.devices=-2"], "trainer.devices=-2 is not a device count"),
    "bogus precision": (["trainer.precision=bogus"], "trainer.precision=bogus is not a precision"),
    "16-mixed on CPU": (["trainer.precision=16-mixed"], "does not run on a CPU"),
    "3 devices, no GPU": (["trainer.devices=3"], "trainer.accelerator=cpu trainer.devices=3"),
    "8-GPU recipe on CPU": (["experiment=simclr_imagenet", f"data.root={CIFAR_SUBSET}"], "asks for 8 devices but no GPU"),
    "ddp on one device": (["strategy=ddp"], "use strategy=single"),
    "warm-up longer than the run": (["scheduler.warmup_epochs=20", "trainer.max_epochs=2"], "longer than the run"),
    "resolution beyond the data": (["data.resolution=64"], "data.resolution=64 is over 4x the 8 px images"),
    "mean of 2 channels": (["data.mean=[0.5,0.5]"], "data.mean=[0.5, 0.5] has 2 values"),
    "loss of another method": (["method=byol", "loss=nt_xent"], "method=byol trains with BYOLLoss"),
    "download offline": (["data=cifar10", "data.download=true"], "cannot download cifar10"),
}


@pytest.mark.parametrize("case", BAD_RUNS)
def test_bad_input_is_one_line_before_any_work(case, tmp_path, monkeypatch):
    overrides, message = BAD_RUNS[case]
    if "experiment=simclr_imagenet" in overrides and not (CIFAR_SUBSET / "train").is_dir():
        pytest.skip(f"{CIFAR_SUBSET} not found")
    if "data=cifar10" in overrides:  # whatever this machine's network: the download fails as offline
        import torchvision.datasets.cifar

        monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", _no_network)
        overrides = [*overrides, f"data.root={tmp_path / 'data'}"]
    with pytest.raises(UserError) as raised:
        start_run(overrides, tmp_path)
    text = str(raised.value)
    assert message in text and "\n" not in text, text


@pytest.mark.parametrize("overrides, key", [
    (["optimizer.name=larss"], "optimizer.name"),
    (["eval=linear", "eval.linear.solver=adam"], "eval.linear.solver"),
    (["scheduler.name=cosine"], "scheduler.name"),
])
def test_a_typo_in_a_choice_is_refused_when_composing(overrides, key):
    with pytest.raises(Exception) as raised:
        compose_train(overrides)
    line = config_error_message(raised.value)
    assert line.startswith(f"{key}: Invalid value") and "expected one of" in line and "\n" not in line, line


def test_every_method_accepts_its_own_loss():
    from hydra.utils import get_class

    for method in sorted(p.stem for p in (REPO / "conf" / "method").glob("*.yaml")):
        cfg = compose_train([f"method={method}"])
        method_class = get_class(cfg.method._target_)
        assert method_class.losses and issubclass(get_class(cfg.loss._target_), method_class.losses), method


# --- end to end: exit status, one `error:` line, no traceback ---------------------------------------

def _one_error_line(proc) -> str:
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    errors = [line for line in (proc.stderr + proc.stdout).splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


@pytest.mark.parametrize("script, args, message", [
    ("eval.py", ["ckpt_path={tmp}/notes.txt"], "it is truncated or not a Lightning checkpoint"),
    ("train.py", ["optimizer.name=larss"], "expected one of [sgd, lars, adamw] (did you mean lars?)"),
    ("train.py", ["trainer.devices=3"], "trainer.accelerator=cpu trainer.devices=3"),
    ("train.py", ["-m", "method=simclr,byol", "--cfg", "job"], "--multirun and --cfg cannot be combined"),
])
def test_entry_point_fails_in_one_line(script, args, message, tmp_path):
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    proc = run_script(script, [a.format(tmp=tmp_path) for a in args], tmp_path / "run",
                      env={"CUDA_VISIBLE_DEVICES": ""}, timeout=120)
    assert message in _one_error_line(proc)


def test_a_sweep_whose_every_job_failed_exits_non_zero(tmp_path):
    proc = run_script("train.py", ["-m", "optimizer.lr=-1,-2", f"hydra.sweep.dir={tmp_path}"], timeout=120)
    assert "all 2 job(s) of the sweep failed" in _one_error_line(proc)
    assert (tmp_path / "report.md").is_file()  # the report is still written, before the exit


# --- the multirun report --------------------------------------------------------------------------

def _fake_run(root, job: int, lr: str, seed: int, knn: float):
    run = root / f"{job}_simclr"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(f"- optimizer.lr={lr}\n- seed={seed}\n")
    (run / "results.json").write_text(json.dumps({"method": "simclr", "data": "digits", "backbone": "resnet18",
                                                  "epochs": 1, "seed": seed, "knn_top1": knn}))


def test_report_shows_runs_differing_only_in_seed_as_mean_and_spread(tmp_path):
    from selfsup.report.markdown import markdown
    from selfsup.report.runs import collect, seed_groups

    for job, (lr, seed, knn) in enumerate([("0.1", 1, 0.90), ("0.1", 2, 0.92), ("0.1", 3, 0.94), ("0.3", 1, 0.5)]):
        _fake_run(tmp_path, job, lr, seed, knn)
    runs = collect(tmp_path)
    assert [[r.dir.name for r in g] for g in seed_groups(runs)] == [["0_simclr", "1_simclr", "2_simclr"], ["3_simclr"]]
    report = markdown(tmp_path, runs)
    assert "| optimizer.lr=0.1 | 1, 2, 3 | 0.9200 ± 0.0200 |" in report


def test_report_accuracy_axis_is_fitted_to_the_data():
    from selfsup.report.plot import fitted_range

    low, high = fitted_range([(0.91, 0.91), (0.93, 0.94)])
    assert 0.85 < low < 0.91 and 0.94 < high < 1.0
    assert fitted_range([]) == (0.0, 1.0)


# --- CLI ------------------------------------------------------------------------------------------

def test_train_help_shows_examples_and_no_internal_groups():
    proc = run_script("train.py", ["--help"], timeout=120)
    assert proc.returncode == 0 and "python train.py experiment=simclr_cifar10" in proc.stdout
    assert "method: " in proc.stdout and "schema/" not in proc.stdout, proc.stdout


def test_eval_help_loads_neither_torch_nor_hydras_slow_group_listing():
    script = ("import atexit, runpy, sys\n"
              "atexit.register(lambda: print('torch loaded:', 'torch' in sys.modules))  # Hydra exits after --help\n"
              "from hydra._internal.hydra import Hydra\n"
              "def slow(*args, **kwargs): raise AssertionError('Hydra composed every group option for --help')\n"
              "Hydra.format_config_groups = slow\n"
              "sys.argv = ['eval.py', '--help']\n"
              "runpy.run_path('eval.py', run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "python eval.py ckpt_path=" in proc.stdout and "method: " not in proc.stdout
    assert "torch loaded: False" in proc.stdout


def test_cfg_job_resolve_prints_the_resolved_config():
    proc = run_script("train.py", ["--cfg", "job", "--resolve"], timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "${" not in proc.stdout and "output_dir: /" in proc.stdout
