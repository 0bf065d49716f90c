"""Bad inputs end in one actionable `error:` line before anything heavy: no traceback, no training step, no kNN at
init; in-process and through train.py."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
from conftest import (
    CIFAR_SUBSET,
    REPO,
    assert_one_line_error,
    compose_train,
    run_script,
)

from selfsup.cli import config_error_message
from selfsup.errors import UserError


# --- fail before training, in one line ------------------------------------------------------------
def _bad_inputs(tmp: Path) -> list[tuple[str, list[str], dict, tuple[str, ...]]]:
    empty = tmp / "empty"
    empty.mkdir()
    no_val = tmp / "no_val"
    (no_val / "train" / "cat").mkdir(parents=True)
    not_a_ckpt = tmp / "garbage.ckpt"
    not_a_ckpt.write_bytes(b"not a checkpoint")
    byol_ckpt = tmp / "byol.ckpt"
    torch.save({"hyper_parameters": {"cfg": {"method": {"name": "byol"}}}, "global_step": 5, "epoch": 0}, byol_ckpt)
    no_key = {
        "WANDB_MODE": "online",
        "WANDB_API_KEY": "",
        "WANDB_IDENTITY_TOKEN_FILE": "",
        "NETRC": str(tmp / "no-netrc"),
    }
    cases = [
        ("unknown-method", ["method=simclrr"], {}, ("method", "simclrr", "did you mean simclr", "simclr")),
        ("unknown-backbone", ["backbone=resnet19"], {}, ("backbone", "resnet19", "resnet18")),
        ("unknown-data", ["data=cifar11"], {}, ("data", "cifar11", "cifar10")),
        ("typo-key", ["optimizer.lrr=0.1"], {}, ("optimizer.lrr", "did you mean optimizer.lr")),
        ("typo-key-added-with-plus", ["+optimizer.lrr=0.1"], {}, ("optimizer.lrr", "optimizer.lr")),
        ("unknown-top-level-key", ["sed=1"], {}, ("'sed'",)),
        ("wrong-type", ["optimizer.lr=fast"], {}, ("optimizer.lr", "fast", "Float")),
        ("wrong-type-int", ["trainer.max_epochs=ten"], {}, ("trainer.max_epochs", "Integer")),
        ("malformed-override", ["data.batch_size=[8"], {}, ("data.batch_size=[8",)),
        ("zero-lr", ["optimizer.lr=0"], {}, ("optimizer.lr", "> 0")),
        ("negative-lr", ["optimizer.lr=-0.1"], {}, ("optimizer.lr", "> 0")),
        ("zero-batch", ["data.batch_size=0"], {}, ("data.batch_size", "> 0")),
        ("zero-epochs", ["trainer.max_epochs=0"], {}, ("trainer.max_epochs", "> 0")),
        ("zero-temperature", ["loss.temperature=0"], {}, ("loss.temperature", "> 0")),
        ("batch-larger-than-dataset", ["data.batch_size=4096"], {}, ("data.batch_size=4096", "lower data.batch_size")),
        (
            "moco-queue-not-divisible",
            ["method=mocov2", "method.queue_size=1000", "data.batch_size=48"],
            {},
            ("queue", "1000", "48"),
        ),  # devices=auto: checked once the Trainer knows the world size
        (
            "jigsaw-permutations-missing",
            ["method=jigsaw", "method.num_permutations=500"],
            {},
            ("method.num_permutations=500", "100", "1000", "make_jigsaw_permutations"),
        ),
        ("mask-larger-than-image", ["method=context_encoder", "method.mask.area=1.5"], {}, ("method.mask.area=1.5",)),
        (
            "data-root-missing",
            ["data=folder", f"data.root={tmp / 'nowhere'}"],
            {},
            (str(tmp / "nowhere"), "does not exist"),
        ),
        ("data-root-empty", ["data=folder", f"data.root={empty}"], {}, (str(empty), "empty")),
        ("data-root-without-val", ["data=folder", f"data.root={no_val}"], {}, ("val/",)),
        ("data-root-unset", ["data=folder"], {}, ("data.root", "not set")),
        ("checkpoint-missing", [f"ckpt_path={tmp / 'gone.ckpt'}"], {}, ("gone.ckpt", "does not exist")),
        ("checkpoint-unreadable", [f"ckpt_path={not_a_ckpt}"], {}, ("garbage.ckpt", "cannot read")),
        ("checkpoint-of-another-method", [f"ckpt_path={byol_ckpt}"], {}, ("byol", "simclr")),
        ("syncbn-without-gpus", ["strategy.sync_batchnorm=true", "trainer.accelerator=cpu"], {}, ("GPU",)),
        ("more-cpu-devices-than-cores", ["trainer.accelerator=cpu", "trainer.devices=4096"], {}, ("4096", "cores")),
        ("wandb-online-without-key", ["logger=wandb"], no_key, ("W&B", "WANDB_MODE=online", "wandb login")),
        ("bad-resume-mode", ["resume=sometimes"], {}, ("resume=sometimes", "auto", "never")),
        ("bad-on-nonfinite", ["on_nonfinite=ignore"], {}, ("on_nonfinite=ignore", "skip")),
    ]
    if not torch.cuda.is_available():
        cases.append(("gpu-requested-without-gpu", ["trainer.accelerator=gpu", "trainer.devices=1"], {}, ("GPU",)))
    return cases


BAD_INPUT_IDS = [  # the cases of _bad_inputs, by name
    "unknown-method",
    "unknown-backbone",
    "unknown-data",
    "typo-key",
    "typo-key-added-with-plus",
    "unknown-top-level-key",
    "wrong-type",
    "wrong-type-int",
    "malformed-override",
    "zero-lr",
    "negative-lr",
    "zero-batch",
    "zero-epochs",
    "zero-temperature",
    "batch-larger-than-dataset",
    "moco-queue-not-divisible",
    "jigsaw-permutations-missing",
    "mask-larger-than-image",
    "data-root-missing",
    "data-root-empty",
    "data-root-without-val",
    "data-root-unset",
    "checkpoint-missing",
    "checkpoint-unreadable",
    "checkpoint-of-another-method",
    "syncbn-without-gpus",
    "more-cpu-devices-than-cores",
    "wandb-online-without-key",
    "bad-resume-mode",
    "bad-on-nonfinite",
    "gpu-requested-without-gpu",
]


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory) -> dict:
    cases = {case[0]: case for case in _bad_inputs(tmp_path_factory.mktemp("bad_inputs"))}
    assert set(cases) <= set(BAD_INPUT_IDS)
    return cases


@pytest.mark.parametrize("case", BAD_INPUT_IDS)
def test_bad_input_fails_before_training_in_one_line(case, bad_inputs, tmp_path):
    if case not in bad_inputs:
        pytest.skip("a CUDA GPU is present")
    _, args, env, expected = bad_inputs[case]
    proc = run_script(
        "train.py",
        [*args, "eval.knn_at_init=false", "trainer.enable_progress_bar=false"],
        tmp_path / "run",
        timeout=300,
        env=env,
    )
    assert_one_line_error(proc, *expected)
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained


def test_full_traceback_stays_available(tmp_path):
    proc = run_script("train.py", ["optimizer.lr=0"], tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "optimizer.lr must be > 0" in proc.stderr


FAST = ["resume=never", "images=false", "eval.knn_at_init=true", "data.num_workers=0"]


def start_run(overrides: list[str], tmp_path) -> None:
    """What train.py runs (checks, then `pretrain`) on a CPU-only machine, with training and the
    kNN at init replaced by a failure: a bad input must be refused before either."""
    import pytorch_lightning as pl

    from selfsup.checks import check_train_config
    from selfsup.run import pipeline
    from selfsup.run.plan import plan_run

    def too_late(*args, **kwargs):
        raise AssertionError("the run got past the checks: kNN at init or training started")

    mp = pytest.MonkeyPatch()
    mp.setattr(torch.cuda, "is_available", lambda: False)
    mp.setattr(pipeline, "evaluate_backbone", too_late)
    mp.setattr(pl.Trainer, "fit", too_late)
    try:
        cfg = compose_train([*FAST, *overrides], tmp_path)
        check_train_config(cfg)
        pipeline.pretrain(plan_run(cfg))
    finally:
        mp.undo()


def _no_network(*args, **kwargs):
    raise urllib.error.URLError("[Errno -2] Name or service not known")


BAD_RUNS = {  # overrides -> what the one line must say
    "devices -2": (["trainer.devices=-2"], "trainer.devices=-2 is not a device count"),
    "bogus precision": (["trainer.precision=bogus"], "trainer.precision=bogus is not a precision"),
    "16-mixed on CPU": (["trainer.precision=16-mixed"], "does not run on a CPU"),
    "3 devices, no GPU": (["trainer.devices=3"], "trainer.accelerator=cpu trainer.devices=3"),
    "8-GPU recipe on CPU": (
        ["experiment=simclr_imagenet", f"data.root={CIFAR_SUBSET}"],
        "asks for 8 devices but no GPU",
    ),
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


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["optimizer.name=larss"], "optimizer.name"),
        (["eval=linear", "eval.linear.solver=adam"], "eval.linear.solver"),
        (["scheduler.name=cosine"], "scheduler.name"),
    ],
)
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


def _one_error_line(proc) -> str:
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    errors = [line for line in (proc.stderr + proc.stdout).splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


@pytest.mark.parametrize(
    "script, args, message",
    [
        ("eval.py", ["ckpt_path={tmp}/notes.txt"], "it is truncated or not a Lightning checkpoint"),
        ("train.py", ["optimizer.name=larss"], "expected one of [sgd, lars, adamw] (did you mean lars?)"),
        ("train.py", ["trainer.devices=3"], "trainer.accelerator=cpu trainer.devices=3"),
        ("train.py", ["-m", "method=simclr,byol", "--cfg", "job"], "--multirun and --cfg cannot be combined"),
    ],
)
def test_entry_point_fails_in_one_line(script, args, message, tmp_path):
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    proc = run_script(
        script, [a.format(tmp=tmp_path) for a in args], tmp_path / "run", env={"CUDA_VISIBLE_DEVICES": ""}, timeout=120
    )
    assert message in _one_error_line(proc)


def test_a_sweep_whose_every_job_failed_exits_non_zero(tmp_path):
    proc = run_script("train.py", ["-m", "optimizer.lr=-1,-2", f"hydra.sweep.dir={tmp_path}"], timeout=120)
    assert "all 2 job(s) of the sweep failed" in _one_error_line(proc)
    assert (tmp_path / "report.md").is_file()  # the report is still written, before the exit
