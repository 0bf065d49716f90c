"""Structured-config schemas: every group's YAML extends one of these, so a typo'd key or a
value of the wrong type fails when Hydra composes the config, before anything is built.

YAML files pull their schema with `defaults: [/schema/<group>/<name>@_here_, _self_]`.
Custom resolvers used by the YAML tree are registered here too.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


# --- data & augmentation -------------------------------------------------------------------
@dataclass
class DataConfig:
    name: str = MISSING
    root: Optional[str] = None
    resolution: Optional[int] = None        # null: inferred from the first training image
    num_classes: Optional[int] = None       # null: inferred from the dataset
    mean: List[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: List[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    batch_size: int = 256                   # per device
    num_workers: Optional[int] = None       # null: derived from the CPUs available per device
    pin_memory: bool = True
    download: bool = False
    class_list: Optional[str] = None        # imagenet100: file naming the 100 classes
    knn_bank_size: Optional[int] = None     # cap on training images in the kNN memory bank
    skip_corrupt: bool = False


@dataclass
class ViewConfig:
    crop_scale: List[float] = field(default_factory=lambda: [0.08, 1.0])
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    solarize_p: float = 0.0


@dataclass
class AugmentationConfig:
    name: str = MISSING
    resolution: int = MISSING
    mean: List[float] = MISSING
    std: List[float] = MISSING
    blur: bool = MISSING                    # blur only helps at resolutions where it is not a smear
    views: List[ViewConfig] = MISSING


# --- model ----------------------------------------------------------------------------------
@dataclass
class BackboneConfig:
    name: str = MISSING
    cifar_stem: bool = False
    zero_init_residual: bool = False
    channels_last: bool = True


@dataclass
class HeadConfig:
    hidden_dim: int = 2048
    output_dim: int = 128
    num_layers: int = 2
    batch_norm: bool = True
    last_batch_norm: bool = False


@dataclass
class MethodConfig:
    _target_: str = MISSING
    name: str = MISSING


@dataclass
class SimCLRConfig(MethodConfig):
    projector: HeadConfig = field(default_factory=HeadConfig)


@dataclass
class NTXentConfig:
    _target_: str = "selfsup.losses.nt_xent.NTXentLoss"
    temperature: float = 0.5


# --- optimisation ---------------------------------------------------------------------------
@dataclass
class OptimizerConfig:
    name: str = MISSING                     # sgd | lars | adamw
    lr: float = MISSING                     # base LR for a global batch of 256
    scale_lr: bool = True                   # lr = base_lr * global_batch / 256
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    trust_coefficient: float = 0.001        # LARS
    exclude_bias_and_norm: bool = True
    probe_lr: float = 0.1                   # online linear probe, its own group, no weight decay


@dataclass
class SchedulerConfig:
    name: str = MISSING                     # warmup_cosine | constant
    warmup_epochs: float = 0.0
    warmup_start_factor: float = 0.0
    min_lr_factor: float = 0.0


# --- evaluation -----------------------------------------------------------------------------
@dataclass
class KNNConfig:
    k: int = 200
    temperature: float = 0.1


@dataclass
class LinearConfig:
    weight_decays: List[float] = field(default_factory=lambda: [0.0, 1e-5, 1e-4, 1e-3])
    max_iter: int = 200                     # L-BFGS iterations on cached features
    holdout_fraction: float = 0.1           # of train, used to pick the weight decay


@dataclass
class EvalConfig:
    name: str = MISSING
    knn: Optional[KNNConfig] = field(default_factory=KNNConfig)
    linear: Optional[LinearConfig] = None
    knn_at_init: bool = True


# --- run ------------------------------------------------------------------------------------
@dataclass
class TrainerConfig:
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    precision: Any = "32-true"
    max_epochs: int = 100
    max_steps: int = -1
    limit_train_batches: Optional[Any] = None
    limit_val_batches: Optional[Any] = None
    check_val_every_n_epoch: int = 1
    log_every_n_steps: int = 50
    accumulate_grad_batches: int = 1
    gradient_clip_val: Optional[float] = None
    deterministic: Any = False
    benchmark: Optional[bool] = None
    num_sanity_val_steps: int = 0
    fast_dev_run: Any = False
    overfit_batches: Any = 0.0
    profiler: Optional[str] = None
    enable_progress_bar: bool = True


@dataclass
class StrategyConfig:
    name: str = MISSING
    strategy: Any = "auto"                  # Lightning strategy name or object
    sync_batchnorm: bool = False


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


def _register_resolvers() -> None:
    resolvers = {
        "ge": lambda a, b: a is not None and a >= b,
        "le": lambda a, b: a is not None and a <= b,
        "cpu_count": lambda: len(os.sched_getaffinity(0)),
        "auto_precision": _auto_precision,
    }
    for name, fn in resolvers.items():
        OmegaConf.register_new_resolver(name, fn, replace=True)


def _auto_precision() -> str:
    """bf16 autocast where the hardware does it natively (Ampere+ GPUs, AVX-512-BF16/AMX CPUs),
    since it is ~3x faster than fp32 on such CPUs; fp32 elsewhere."""
    import torch

    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return "32-true"
    return "bf16-mixed" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "32-true"


SCHEMAS = {
    "data": DataConfig,
    "augmentation": AugmentationConfig,
    "backbone": BackboneConfig,
    "method/simclr": SimCLRConfig,
    "loss/nt_xent": NTXentConfig,
    "optimizer": OptimizerConfig,
    "scheduler": SchedulerConfig,
    "eval": EvalConfig,
    "trainer": TrainerConfig,
    "strategy": StrategyConfig,
    "paths": PathsConfig,
}


def register_configs() -> None:
    """Make the schemas visible to Hydra as `schema/<group>` (call before `hydra.main` runs)."""
    _register_resolvers()
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    for path, node in SCHEMAS.items():
        group, _, name = path.rpartition("/")
        if not group:
            group, name = path, "base"
        store.store(group=f"schema/{group}", name=name, node=node)
