"""Launching on CPU and GPU: strategies compose, DDP and ShuffleBN run end to end through train.py, device requests
and SLURM requeues."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN, compose_train, run_script
from omegaconf import OmegaConf

CPU_DDP = ["trainer.accelerator=cpu", "trainer.devices=2"]


# One torch thread per process: the ranks set it themselves, this covers the launching process's
# final evaluation too (on a 2-core machine, 2 threads per process run ~10x slower when shared).
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


# fp32: under bf16-mixed on CPU this tiny shape (ResNet-18 at 16 px without the CIFAR stem, 1x1 maps
# in layer3/4) intermittently gets a NaN gradient in layer4 at step 0, one or two processes alike.
TINY = [*TINY_RUN, "trainer.precision=32-true"]


def _run(args: list[str], run_dir: Path | None = None):
    return run_script("train.py", args, run_dir, env=ONE_THREAD)


def train(args: list[str], run_dir: Path) -> dict:
    proc = _run(args, run_dir)
    assert proc.returncode == 0, f"train.py {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads((run_dir / "results.json").read_text())


@pytest.mark.parametrize(
    "name, strategy, syncbn, shuffle, groups",
    [
        ("single", "auto", False, False, 1),
        ("ddp", "ddp", False, False, 1),
        ("ddp_spawn", "ddp_spawn", False, False, 1),
        ("ddp_syncbn", "ddp", True, False, 1),
        ("ddp_shufflebn", "ddp", False, True, 1),
        ("single_shufflebn", "auto", False, True, 8),
    ],
)
def test_strategy_configs_compose(name, strategy, syncbn, shuffle, groups):
    cfg = compose_train([f"strategy={name}", "method=mocov2"]).strategy
    assert (cfg.name, cfg.strategy, cfg.sync_batchnorm, cfg.shuffle_bn, cfg.split_bn_groups) == (
        name,
        strategy,
        syncbn,
        shuffle,
        groups,
    )


def test_gpu_requests_beyond_the_machine_fail_in_one_line(monkeypatch):
    from selfsup.errors import UserError
    from selfsup.methods.simclr import SimCLR
    from selfsup.run.launch import check_strategy

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    cfg = compose_train(["trainer.accelerator=gpu", "trainer.devices=4", "strategy=ddp"])
    with pytest.raises(UserError, match=r"trainer.devices=4 asks for 4 GPUs per node but 2 are visible"):
        check_strategy(cfg, SimCLR)
    cfg = compose_train(["trainer.accelerator=gpu", "trainer.devices=2", "strategy=ddp_syncbn"])
    check_strategy(cfg, SimCLR)  # fits: no error
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="no CUDA GPU is visible"):
        check_strategy(cfg, SimCLR)


def test_submitit_slurm_recipe_writes_the_expected_sbatch_script(tmp_path, monkeypatch):
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    cfg = compose_train(
        [
            "hydra/launcher=submitit_slurm",
            "trainer.devices=4",
            "trainer.num_nodes=2",
            "hydra.launcher.partition=gpu",
            f"hydra.sweep.dir={tmp_path}",
        ],
        hydra_config=True,
    )
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert params.pop("_target_").endswith("submitit_launcher.SlurmLauncher")
    # What SlurmLauncher.launch does with them; update_parameters rejects any unknown key.
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", staticmethod(lambda: 1))  # no srun here
    executor = submitit.AutoExecutor(
        cluster="slurm", folder=params.pop("submitit_folder"), slurm_max_num_timeout=params.pop("max_num_timeout")
    )
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    script = executor._executor._make_submission_file_text("python -m submitit.core._submit", "uid")
    for line in (
        "--nodes=2",
        "--gpus-per-node=4",
        "--ntasks-per-node=4",
        "--partition=gpu",
        "--time=4320",
        "--signal=USR1@120",
        "--requeue",
    ):
        assert f"#SBATCH {line}" in script, script


def test_a_requeued_slurm_job_resumes_from_the_newer_of_requeue_and_last_checkpoint(tmp_path, monkeypatch):
    import os

    from selfsup.run.resume import resume_point

    def checkpoint(path):
        path.parent.mkdir(exist_ok=True)
        torch.save({"hyper_parameters": {"cfg": {"method": {"name": "simclr"}}}, "global_step": 1}, path)

    cfg = OmegaConf.create(
        {"ckpt_path": None, "resume": "never", "method": {"name": "simclr"}, "paths": {"output_dir": str(tmp_path)}}
    )
    last, hpc = tmp_path / "checkpoints" / "last.ckpt", tmp_path / "hpc_ckpt_1.ckpt"
    checkpoint(last)
    assert resume_point(cfg) is None  # not under SLURM, resume=never: a fresh run
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    assert resume_point(cfg).checkpoint == str(last)  # requeued after a preemption without the signal
    checkpoint(hpc)
    os.utime(last, (1, 1))
    assert resume_point(cfg).checkpoint == str(hpc)  # Lightning's own, newer, requeue checkpoint
    cfg.ckpt_path = str(last)
    assert resume_point(cfg).checkpoint == str(last)  # an explicit checkpoint wins over resume=never's requeue
    last.unlink(), hpc.unlink()
    cfg.ckpt_path = None
    assert resume_point(cfg) is None  # first start of a SLURM job: nothing to resume


def _one_line_error(proc) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    return errors[0]


def test_ddp_simclr_on_two_cpu_processes_writes_one_results_json(tmp_path):
    results = train([*CPU_DDP, "strategy=ddp", "method=simclr", *TINY], tmp_path)
    assert results["global_batch_size"] == 32 and results["steps"] == 2
    assert [p.name for p in tmp_path.rglob("results.json")] == ["results.json"]


def test_ddp_shufflebn_mocov2_on_two_cpu_processes(tmp_path):
    results = train([*CPU_DDP, "strategy=ddp_shufflebn", "method=mocov2", *TINY], tmp_path)
    assert results["method"] == "mocov2" and results["global_batch_size"] == 32
    assert len(list(tmp_path.rglob("results.json"))) == 1
    state = torch.load(results["checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    assert int(state["queue.ptr"]) == 2 * 32  # 2 steps, each enqueueing the keys of both ranks


def test_single_shufflebn_mocov2_on_one_process(tmp_path):
    results = train(
        [
            "trainer.accelerator=cpu",
            "trainer.devices=1",
            "strategy=single_shufflebn",
            "strategy.split_bn_groups=4",
            "method=mocov2",
            *TINY,
        ],
        tmp_path,
    )
    state = torch.load(results["checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    assert "key_encoder.0.bn1.running_mean" in state and "backbone.bn1.running_mean" in state


def test_syncbn_on_cpu_fails_in_one_line(tmp_path):
    proc = _run([*CPU_DDP, "strategy=ddp_syncbn", *TINY], tmp_path)
    assert _one_line_error(proc) == (
        "error: strategy=ddp_syncbn needs GPUs: torch.nn.SyncBatchNorm does not run on CPU; use strategy=ddp on CPU"
    )


def test_shufflebn_mistakes_fail_in_one_line(tmp_path):
    proc = _run(
        ["trainer.accelerator=cpu", "trainer.devices=1", "strategy=ddp_shufflebn", "method=mocov2", *TINY],
        tmp_path / "one_device",
    )
    assert "strategy=single_shufflebn" in _one_line_error(proc)
    proc = _run([*CPU_DDP, "strategy=ddp_shufflebn", "method=simclr", *TINY], tmp_path / "simclr")
    assert "no key encoder" in _one_line_error(proc)


def test_relaunching_ddp_inside_a_multirun_fails_each_job_in_one_line(tmp_path):
    proc = _run(["-m", *CPU_DDP, "strategy=ddp", *TINY, f"hydra.sweep.dir={tmp_path}"])
    assert "Traceback" not in proc.stderr
    (result,) = [json.loads(p.read_text()) for p in tmp_path.rglob("results.json")]
    assert result["status"] == "failed" and "use strategy=ddp_spawn" in result["error"]  # before any rank starts
    assert "use strategy=ddp_spawn in multiruns); the sweep goes on" in proc.stderr


def test_ddp_spawn_multirun_gives_each_job_its_lr_on_both_ranks(tmp_path):
    proc = _run(["-m", *CPU_DDP, "strategy=ddp_spawn", "optimizer.lr=0.1,0.2", *TINY, f"hydra.sweep.dir={tmp_path}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(jobs) == 2
    # Every rank reports the LR of its own optimizer (gathered to rank 0), jobs in launch order.
    per_rank = re.findall(r"lr per rank \(base -> optimizer\): (.*)", proc.stderr + proc.stdout)
    assert len(per_rank) == 2, proc.stderr[-3000:]
    for job, base, line in zip(jobs, (0.1, 0.2), per_rank):
        scaled = base * 32 / 256
        assert line.strip() == f"rank 0: {base:g} -> {scaled:g}, rank 1: {base:g} -> {scaled:g}"
        results = json.loads((job / "results.json").read_text())
        assert results["global_batch_size"] == 32 and results["steps"] == 2 and results["epochs"] == 1
        assert f"optimizer.lr={base}" in (job / ".hydra" / "overrides.yaml").read_text()
