"""Plan, then run: `plan_run` turns the composed config into everything a training run is before anything
slow starts (the final config, the method, where it continues from, its warm start, its devices, its
data), and runs every check that needs no Trainer; `pipeline.pretrain` then only fits and records."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytorch_lightning as pl
import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.utilities import rank_zero_only

from selfsup.checks import eval_data, requested_devices
from selfsup.data.datamodule import SSLDataModule, build_data
from selfsup.data.datasets import SKIPPED_IMAGES_FILE
from selfsup.models.weights import Weights, check_backbone, find_weights
from selfsup.run.launch import check_run, check_strategy, planned_world_size, training_device
from selfsup.run.resume import ResumePoint, resume_point

MONITOR_SHARE = 0.05  # trainer.check_val_every_n_epoch=auto: the kNN monitor's share of the training compute


@dataclass(frozen=True)
class RunPlan:
    cfg: DictConfig  # the final config: in the run's directory, completed from the data, resolved, read-only
    method: type  # the SSLMethod subclass cfg.method names
    resume: Optional[ResumePoint]  # the checkpoint fit continues from; None: a fresh start
    weights: Optional[Weights]  # weights=: the warm start (recorded; loaded only into a fresh start)
    world: int  # the processes the Trainer will start
    device: torch.device  # where rank 0 evaluates (kNN at init, the final evaluation)
    bf16: bool
    datamodule: SSLDataModule
    skipped_list: Path  # data.skip_corrupt: the images every worker and rank skipped, one per line
    started: float  # time.perf_counter() when planning began: results.json's seconds.total counts from it

    @property
    def knn_at_init(self) -> bool:
        return bool(
            self.cfg.eval.knn_at_init and self.cfg.eval.knn is not None and self.datamodule.labelled is not None
        )


def plan_run(requested: DictConfig) -> RunPlan:
    """The plan of the run `requested` asks for (the composed config, through `checks.check_train_config`, as
    train.py does before torch loads); `requested` itself is left as it was.

    Each check runs once, before anything is built that takes time: the devices and strategy, the checkpoint
    to continue from and the warm start, then, with the data known, the batch against the data and the
    method's own rules at the world size the Trainer will have (`check_launch` confirms it with the Trainer)."""
    started = time.perf_counter()
    method = get_class(requested.method._target_)
    check_strategy(requested, method)
    resume = resume_point(requested)
    weights = find_weights(requested.weights) if requested.get("weights") else None  # located before any work
    if weights is not None:
        check_backbone(weights, requested.backbone.name)
    if requested.seed is not None:  # before the data and the model (the seed is in the config and results.json)
        pl.seed_everything(requested.seed, workers=True, verbose=False)
    world = planned_world_size(requested.trainer)
    scored_data = eval_data(requested)  # eval.data: the labelled splits come from it
    cfg, datamodule = build_data(
        in_run_dir(requested, resume),
        scored_data,  # data.resolution / num_classes filled in
        devices_per_node=requested_devices(requested.trainer.devices) or 1,
    )
    skipped_list = Path(cfg.paths.output_dir) / SKIPPED_IMAGES_FILE
    for dataset in {id(d): d for d in (datamodule.pretrain, datamodule.labelled, datamodule.val)}.values():
        if hasattr(dataset, "log_skipped_to"):  # data.skip_corrupt: one list for all loader workers and ranks
            dataset.log_skipped_to(skipped_list)
    check_run(cfg, world, datamodule, method)
    with open_dict(cfg):  # (cfg is build_data's copy)
        if datamodule.labelled is None:  # no labels: no kNN monitor
            cfg.trainer.limit_val_batches = 0
        cfg.trainer.check_val_every_n_epoch = monitor_interval(cfg, datamodule)
    OmegaConf.resolve(cfg)  # ranks spawned by ddp_spawn have no Hydra context to resolve ${hydra:...} in
    OmegaConf.set_readonly(cfg, True)
    return RunPlan(
        cfg,
        method,
        resume,
        weights,
        world,
        training_device(cfg.trainer),
        "bf16" in str(cfg.trainer.precision),
        datamodule,
        skipped_list,
        started,
    )


def in_run_dir(requested: DictConfig, resume: Optional[ResumePoint]) -> DictConfig:
    """`requested`, writing into the run it continues (resume=auto found an unfinished run of the same
    command beside this one): checkpoints, the CSV, the W&B run id and results.json stay in one place."""
    return requested if resume is None else OmegaConf.merge(requested, {"paths": {"output_dir": resume.run_dir}})


def monitor_interval(cfg: DictConfig, datamodule: SSLDataModule) -> int:
    """trainer.check_val_every_n_epoch, with `auto` resolved so that the kNN monitor (one forward of the
    memory bank and the val split) costs at most about MONITOR_SHARE of the training (forward + backward,
    ~3 forwards, of every view of every training image), at an interval that divides trainer.max_epochs:
    the last epoch is always monitored, and that one is free, since the final evaluation reuses its
    features (it embeds the same images with the same weights)."""
    every = cfg.trainer.check_val_every_n_epoch
    if every != "auto" or datamodule.labelled is None:  # (no labels: no monitor, limit_val_batches=0)
        return every if every != "auto" else 1
    bank = min(len(datamodule.labelled), cfg.data.knn_bank_size or len(datamodule.labelled))
    train_cost = 3 * len(datamodule.pretrain) * len(cfg.augmentation.views)
    every = max(1, math.ceil((bank + len(datamodule.val)) / (MONITOR_SHARE * train_cost)))
    epochs = cfg.trainer.max_epochs
    if epochs and epochs > 0:
        every = min(n for n in range(every, epochs + 1) if epochs % n == 0) if every <= epochs else epochs
    if rank_zero_only.rank == 0:
        print(
            f"kNN monitor every {every} epoch{'s' if every > 1 else ''} (trainer.check_val_every_n_epoch=auto: "
            f"~{MONITOR_SHARE:.0%} of the training compute)",
            flush=True,
        )
    return every
