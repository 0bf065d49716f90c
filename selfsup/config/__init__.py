"""Structured-config schemas: every group's YAML extends one of these, so a typo'd key or a
value of the wrong type fails when Hydra composes the config, before anything is built.

YAML files pull their schema with `defaults: [/schema/<group>/<name>@_here_, _self_]`; the schemas
live in this package's modules by group (data, model, losses, training, evaluation), each dataclass
naming its `<group>/<name>` with `@schema` (registry.py). One source per value: a schema holds types
and what is required; the values are in the YAML, so a field that its YAML sets has no default here
(MISSING). Only what no YAML sets has a default in the schema. Custom resolvers used by the YAML
tree are registered here too, and `compose_train` composes conf/train.yaml outside a Hydra app
(tests, bench, notebooks).
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf, open_dict

# The schema modules: importing them registers their @schema dataclasses (selfsup/config/registry.py).
from selfsup.config import data, evaluation, losses, model, training  # noqa: F401
from selfsup.config.registry import SCHEMAS
from selfsup.config.training import TrainConfig

REPO = Path(__file__).resolve().parents[2]  # the checkout: conf/ and the default paths.root_dir


def _register_resolvers() -> None:
    resolvers = {
        "ge": lambda a, b: a is not None and a >= b,
        "le": lambda a, b: a is not None and a <= b,
        "cpu_count": lambda: len(os.sched_getaffinity(0)),
        # The launch directory (hydra.job.chdir is false). Unlike ${hydra:runtime.cwd} it resolves
        # before the first job too, where a multirun's sweeper resolves hydra.sweep.dir.
        "cwd": lambda: os.getcwd(),
        "auto_precision": _auto_precision,
        "run_dir": _run_dir,
        "local_crop": _local_crop_resolution,
    }
    for name, fn in resolvers.items():
        OmegaConf.register_new_resolver(name, fn, replace=True)


def _run_dir() -> str:
    """The job's output directory, ${hydra:runtime.output_dir}; before a job exists (`--cfg job
    --resolve`) that is unset, so the directory a run of this command would get."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    return OmegaConf.select(hydra_cfg, "runtime.output_dir", throw_on_missing=False) or hydra_cfg.run.dir


def _local_crop_resolution(resolution: int) -> int:
    """Multi-crop's local view side: 3/7 of the global one (96 px at 224, DINO and SwAV), to a multiple
    of 8 and at least 8 (16 px at 32)."""
    if resolution is None:
        raise ValueError("the local crop size needs data.resolution, which is not known yet")
    return max(8, round(resolution * 3 / 7 / 8) * 8)


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


def register_configs() -> None:
    """Make the schemas visible to Hydra as `schema/<group>` (call before `hydra.main` runs)."""
    _register_resolvers()
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    for path, node in SCHEMAS.items():
        group, _, name = path.partition("/")
        store.store(group=f"schema/{group}", name=name, node=node)


def compose_train(overrides: list[str], output_dir: str | Path | None = None, hydra_config: bool = False) -> DictConfig:
    """conf/train.yaml with `overrides`, composed as train.py composes it but outside a Hydra app:
    paths.root_dir is the checkout (so paths.data_dir and paths.log_dir are its data/ and outputs/
    unless overridden) and paths.output_dir is `output_dir`; with None it stays `${run_dir:}`, which
    resolves inside a Hydra job only. `hydra_config`: keep the `hydra` node (launcher, sweeper, the
    command line's overrides) too. A bad override raises Hydra's error as it composes."""
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=hydra_config)
    with open_dict(cfg):
        cfg.paths.root_dir = str(REPO)
        if output_dir is not None:
            cfg.paths.output_dir = str(output_dir)
    return cfg
