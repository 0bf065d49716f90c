"""Devices, processes and the Trainer: what a run is launched on, checked before anything is built."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.plugins.environments import SLURMEnvironment

from selfsup.callbacks import CpuThreadsPerRank, ThroughputMonitor
from selfsup.checks import check_global_batch, requested_devices
from selfsup.errors import UserError
from selfsup.pictures.publish import MethodGrid, ViewsPicture
from selfsup.run.checkpoint import checkpoint_io
from selfsup.run.progress import RunProgress
from selfsup.run.state import RunState
from selfsup.tracking import GPUMemoryMonitor, logger_kwargs


def visible_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def planned_world_size(trainer) -> int:
    """The number of processes Lightning will start for `trainer.*` (devices x nodes), before the
    Trainer exists: "auto" means every visible GPU, or one CPU process."""
    accelerator = str(trainer.accelerator)
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and visible_gpus() > 0)
    wanted = requested_devices(trainer.devices)
    if wanted is None:
        wanted = visible_gpus() if on_gpu else 1
    return max(1, wanted) * max(1, trainer.num_nodes or 1)


def training_device(trainer_cfg) -> torch.device:
    """Where the launching process evaluates (kNN at init, the final evaluation)."""
    wants_gpu = trainer_cfg.accelerator in ("auto", "gpu", "cuda")
    return torch.device("cuda", 0) if wants_gpu and torch.cuda.is_available() else torch.device("cpu")


def check_strategy(cfg, method_class) -> None:
    """Strategy / device mistakes as one line at start-up, before data or model are built."""
    strategy, trainer = cfg.strategy, cfg.trainer
    accelerator = str(trainer.accelerator)
    gpus = visible_gpus()
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and gpus == 0)
    wanted = requested_devices(trainer.devices)
    if accelerator == "auto" and gpus == 0 and wanted is not None and wanted > 1:
        raise UserError(
            f"trainer.devices={trainer.devices} asks for {wanted} devices but no GPU is visible, so they would be "
            f"{wanted} CPU processes: run on a GPU machine, drop trainer.devices (one CPU process), or pass "
            f"trainer.accelerator=cpu trainer.devices={wanted} if you really want CPU DDP"
        )
    if accelerator == "auto" and gpus == 0 and trainer.num_nodes > 1:
        raise UserError(
            f"trainer.num_nodes={trainer.num_nodes} on a machine without GPUs: this recipe is for a GPU cluster; "
            "pass trainer.num_nodes=1 (and trainer.devices=auto) to run it here"
        )
    if strategy.sync_batchnorm and on_cpu:
        raise UserError(
            f"strategy={strategy.name} needs GPUs: torch.nn.SyncBatchNorm does not run on CPU; use strategy=ddp on CPU"
        )
    if accelerator in ("gpu", "cuda") and gpus == 0:
        raise UserError(f"trainer.accelerator={accelerator} but no CUDA GPU is visible: use trainer.accelerator=cpu")
    if accelerator in ("gpu", "cuda", "auto") and gpus > 0 and wanted is not None and wanted > gpus:
        raise UserError(
            f"trainer.devices={trainer.devices} asks for {wanted} GPUs per node but {gpus} are visible here: "
            f"set trainer.devices to at most {gpus} (nodes: trainer.num_nodes)"
        )
    if str(strategy.strategy).startswith("ddp") and planned_world_size(trainer) == 1:
        single = "single_shufflebn (ShuffleBN emulated on one device)" if strategy.shuffle_bn else "single"
        raise UserError(
            f"strategy={strategy.name} on one device ({'trainer.devices=1' if wanted == 1 else 'no GPU visible'}) starts "
            f"a process group for nothing: use strategy={single}, or trainer.devices=<N> for N devices"
        )
    if on_cpu and str(trainer.precision).startswith("16"):
        raise UserError(
            f"trainer.precision={trainer.precision} (float16) does not run on a CPU (Lightning would silently use bf16): "
            "use trainer.precision=bf16-mixed or 32-true here"
        )
    groups = strategy.split_bn_groups
    if groups < 1:
        raise UserError(f"strategy.split_bn_groups must be >= 1, got {groups}")
    if groups > 1 and cfg.data.batch_size % groups:
        raise UserError(
            f"data.batch_size={cfg.data.batch_size} does not split into strategy.split_bn_groups={groups} "
            f"equal BatchNorm groups: use a batch size that is a multiple of {groups}"
        )
    if strategy.shuffle_bn and not hasattr(method_class, "_encode_keys"):
        raise UserError(
            f"strategy={strategy.name} shuffles the key batch of a momentum-encoder method (MoCo), but "
            f"method={cfg.method.name} has no key encoder: use strategy=ddp or ddp_syncbn"
        )


def check_run(cfg, world: int, datamodule, method_class) -> None:
    """What needs the data (its size, the inferred resolution) and the world size, before the model
    is built: the batch fits the data, and the method's own rules (`check_config`)."""
    per_rank = len(datamodule.pretrain) // max(1, world)
    if per_rank < cfg.data.batch_size:
        raise UserError(
            f"data.batch_size={cfg.data.batch_size} exceeds the {per_rank} training images per device "
            f"({len(datamodule.pretrain)} images / {world} devices); the training loader drops the last "
            f"incomplete batch, so no batch would remain: lower data.batch_size to at most {per_rank}"
        )
    check_global_batch(cfg, world)
    method_class.check_config(cfg, world)


def check_launch(cfg, trainer: pl.Trainer, world: int, multirun: bool) -> None:
    """What is only known once the Trainer has resolved devices, nodes and cluster environment."""
    if trainer.world_size != world:
        raise UserError(
            f"the Trainer starts {trainer.world_size} processes where trainer.devices={cfg.trainer.devices} x "
            f"trainer.num_nodes={cfg.trainer.num_nodes} plan {world}: set both to what this machine or job provides"
        )
    strategy = cfg.strategy
    if multirun and relaunches_script(trainer):
        raise UserError(
            f"strategy={strategy.name} on {trainer.num_devices} devices re-launches train.py once per rank, "
            "which inside a multirun (-m) would re-run the sweep: use strategy=ddp_spawn in multiruns"
        )


def relaunches_script(trainer: pl.Trainer) -> bool:
    """Whether fit starts the other ranks by running this command again (strategy=ddp, not under
    SLURM, which starts its own). The one adapter over Lightning's private launcher classes."""
    from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    launcher = getattr(trainer.strategy, "launcher", None)
    return (
        isinstance(launcher, _SubprocessScriptLauncher)
        and trainer.num_devices > 1
        and not launcher.cluster_environment.creates_processes_externally
    )


def build_trainer(cfg: DictConfig) -> pl.Trainer:
    """The Trainer of `cfg.trainer`, `cfg.strategy`, the configured loggers and callbacks, and what every
    run gets: throughput, per-rank CPU threads, RNG state in checkpoints, progress, atomic saves."""
    run_dir = cfg.paths.output_dir
    loggers = [instantiate(c, **logger_kwargs(c, run_dir)) for c in cfg.logger.values()] if cfg.logger else []
    callbacks = [instantiate(c) for c in cfg.callbacks.values()] if cfg.callbacks else []
    if not cfg.trainer.enable_progress_bar:
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.ProgressBar)]
    if cfg.trainer.get("limit_val_batches") == 0:  # no kNN monitor (data=images alone): no best epoch to keep
        callbacks = [c for c in callbacks if not str(getattr(c, "monitor", None) or "").startswith("val/")]
    callbacks += [
        ThroughputMonitor(),
        CpuThreadsPerRank(),
        RunState(),
        RunProgress(),
    ]  # RunProgress reads ThroughputMonitor
    if cfg.images:
        callbacks.append(ViewsPicture(run_dir, cfg.data.mean, cfg.data.std))
        if "image_every_n_epochs" in cfg.method:  # a method that draws its own rows (image_rows)
            callbacks.append(MethodGrid(run_dir, cfg.method.image_every_n_epochs, cfg.method.image_grid_size))
    if torch.cuda.is_available():
        callbacks.append(GPUMemoryMonitor())
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    if trainer_kwargs.get("check_val_every_n_epoch") == "auto":  # not resolved against the data (pretrain does it)
        trainer_kwargs["check_val_every_n_epoch"] = 1
    if trainer_kwargs.get("benchmark") is None:  # cudnn autotuning (fixed input sizes), unless deterministic
        trainer_kwargs["benchmark"] = not trainer_kwargs.get("deterministic")
    return pl.Trainer(
        **trainer_kwargs,
        strategy=cfg.strategy.strategy,
        sync_batchnorm=cfg.strategy.sync_batchnorm,
        # Under SLURM (also via hydra/launcher=submitit_slurm) the ranks are SLURM's tasks, not re-launched;
        # on the requeue signal Lightning saves hpc_ckpt_<n>.ckpt and requeues the job, which resumes.
        plugins=[
            *([SLURMEnvironment(auto_requeue=True)] if SLURMEnvironment.detect() else []),
            checkpoint_io(background=not SLURMEnvironment.detect()),
        ],
        logger=loggers,
        callbacks=callbacks,
        default_root_dir=run_dir,
    )
