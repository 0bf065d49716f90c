"""What train.py checks before torch loads, in order, and the warning for a benchmark dataset
trained without a paper recipe."""

from __future__ import annotations

import os
from pathlib import Path

from selfsup.checks.config import (
    check_missing_values,
    check_ranges,
    check_run_options,
    check_schema_keys,
    check_values,
    check_warmup,
)
from selfsup.checks.data import check_data_root, check_normalisation, eval_data
from selfsup.checks.devices import check_cpu_devices, check_devices, check_precision
from selfsup.wandb_mode import check_wandb

BENCHMARK_DATASETS = ("cifar10", "cifar100", "stl10", "imagenet", "imagenet100")
EXPERIMENTS = Path(__file__).resolve().parents[2] / "conf" / "experiment"


def check_train_config(cfg) -> None:
    check_values(cfg)
    check_inputs(cfg)
    warning = recipe_warning(cfg)
    if warning and os.environ.get("RANK", "0") == "0":  # once, not per rank of a torchrun / SLURM launch
        print(warning, flush=True)


def check_inputs(cfg) -> None:
    check_schema_keys(cfg)
    check_missing_values(cfg)
    check_ranges(cfg)
    check_run_options(cfg)
    check_data_root(cfg.data)
    eval_data(cfg)
    check_normalisation(cfg.data)
    check_warmup(cfg)
    check_devices(cfg)
    check_precision(cfg.trainer)
    check_cpu_devices(cfg.trainer)
    check_wandb(cfg)


def recipe_warning(cfg) -> str | None:
    """The warning for a real benchmark dataset trained without a paper recipe (experiment=, the only
    configs that set data.global_batch_size): the defaults are sized for the digits smoke test."""
    data, method = cfg.data.name, cfg.method.name
    if data not in BENCHMARK_DATASETS or cfg.data.get("global_batch_size") is not None:
        return None
    recipes = sorted(p.stem for p in EXPERIMENTS.glob(f"*_{data}.yaml"))
    own = [r for r in recipes if r.startswith(f"{method}_") or r.startswith(f"{method}v")]
    advice = (
        f"use experiment={own[0]}"
        if own
        else f"the recipes for data={data}: " + ", ".join(f"experiment={r}" for r in recipes)
        if recipes
        else f"no paper recipe exists for data={data} (see conf/experiment/)"
    )
    return (
        f"WARNING: method={method} data={data} without experiment= trains the small default settings "
        f"(backbone={cfg.backbone.name}, {cfg.trainer.max_epochs} epochs, batch {cfg.data.batch_size} per device), "
        f"not a paper's recipe, so its numbers are not comparable to published ones: {advice}"
    )
