"""Schemas of the optimizer, scheduler, trainer, strategy and paths groups, and of the whole train config."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, List, Optional

from omegaconf import MISSING

from selfsup.config.registry import schema


class OptimizerName(StrEnum):  # an Enum field: Hydra refuses optimizer.name=larss at compose time
    sgd = "sgd"
    lars = "lars"
    adamw = "adamw"


class SchedulerName(StrEnum):
    warmup_cosine = "warmup_cosine"
    constant = "constant"


@schema("optimizer/base")
@dataclass
class OptimizerConfig:
    name: OptimizerName = MISSING
    lr: float = MISSING  # base LR for a global batch of 256
    scale_lr: bool = True  # lr = base_lr * global_batch / 256
    weight_decay: float = MISSING
    momentum: float = 0.9
    nesterov: bool = False
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    trust_coefficient: float = 0.001  # LARS
    clip_lr: bool = False  # LARS: adaptive LR clipped to the base LR (solo-learn's clip_lars_lr)
    exclude_bias_and_norm: bool = True
    bias_and_norm_lr_factor: float = 1.0  # LR of biases and norm weights / the others' (Barlow Twins: 0.024)
    probe_lr: float = 0.1  # online linear probe, its own group, no weight decay


@schema("scheduler/base")
@dataclass
class SchedulerConfig:
    name: SchedulerName = MISSING
    warmup_epochs: float = 0.0
    warmup_start_factor: float = 0.0
    min_lr_factor: float = 0.0


@schema("trainer/base")
@dataclass
class TrainerConfig:
    accelerator: str = MISSING
    devices: Any = MISSING
    num_nodes: int = 1
    precision: Any = MISSING
    max_epochs: int = MISSING
    max_steps: int = -1
    limit_train_batches: Optional[Any] = None
    limit_val_batches: Optional[Any] = None
    check_val_every_n_epoch: Any = MISSING  # an int, or auto: the kNN monitor costs ~5% of training (run/plan.py)
    log_every_n_steps: int = MISSING
    accumulate_grad_batches: int = 1
    gradient_clip_val: Optional[float] = None
    deterministic: Any = False
    benchmark: Optional[bool] = None
    num_sanity_val_steps: int = MISSING
    fast_dev_run: Any = False
    overfit_batches: Any = 0.0
    profiler: Optional[str] = None
    enable_progress_bar: bool = True


@schema("strategy/base")
@dataclass
class StrategyConfig:
    name: str = MISSING
    strategy: Any = MISSING  # Lightning strategy name: auto | ddp | ddp_spawn
    sync_batchnorm: bool = False  # convert BatchNorm to SyncBatchNorm (GPUs only)
    shuffle_bn: bool = False  # MoCo: shuffle the key batch across ranks around the key encoder
    split_bn_groups: int = 1  # > 1: BatchNorm statistics per group of the per-device batch,
    # emulating that many devices without SyncBN (one-device ShuffleBN)


@schema("paths/base")
@dataclass
class PathsConfig:
    root_dir: str = MISSING
    data_dir: str = MISSING
    log_dir: str = MISSING
    output_dir: str = MISSING


@dataclass
class TrainConfig:
    data: Any = MISSING
    backbone: Any = MISSING
    method: Any = MISSING
    loss: Any = MISSING
    augmentation: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    eval: Any = MISSING
    strategy: Any = MISSING
    trainer: Any = MISSING
    logger: Any = MISSING
    callbacks: Any = MISSING
    paths: Any = MISSING
    experiment: Any = None
    debug: Any = None
    task_name: str = "train"
    run_name: str = MISSING
    tags: List[str] = field(default_factory=list)
    seed: Optional[int] = 42
    ckpt_path: Optional[str] = None
    weights: Optional[str] = None  # warm start the backbone: a state dict file, resnet50.IMAGENET1K_V2,
    # timm/<model>.<tag> (local caches only) or random
    hparams_search: Any = None  # conf/hparams_search/<name>.yaml (Optuna), a multirun
    optimized_metric: Optional[str] = None  # what train.py returns to a sweeper, e.g. val/knn_top1
    compile: bool = False  # torch.compile the backbone (first steps slower, later ones faster)
    images: bool = True  # <run dir>/images/: views, neighbours, embedding, curves (selfsup/pictures/)
    resume: str = "auto"  # auto: continue this command's unfinished run | never
    on_nonfinite: str = "stop"  # a NaN/inf loss: stop (keep the last good checkpoint) | skip the batch
    inject_nan_at_step: Optional[int] = None  # TEST HOOK (debug=inject_nan): the loss of this global step becomes NaN
