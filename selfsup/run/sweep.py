"""One job of a run or a sweep: what train.py / eval.py return to Hydra.

In a multirun (`-m`, `make sweep`) a failing job must not take the others down: its error is
caught, recorded in the job's results.json (`status: failed`, the error and its traceback) and
printed, and the job returns None, which Optuna records as a failed trial and the basic sweeper
ignores. A single run still fails loudly. Either way the job's W&B run is finished, so the next
job of the same process starts a run of its own.
"""

from __future__ import annotations

import math
import sys
import traceback
from typing import Callable, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from selfsup.run.results import write_results
from selfsup.wandb_mode import finish_wandb


def is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def metric_value(results: dict, name: Optional[str]) -> Optional[float]:
    """`name` (e.g. val/knn_top1) from the trainer's final callback metrics saved in results.json,
    else the results key of the same name or with the `val/` prefix dropped. None if absent or NaN."""
    if not name or not results:
        return None
    for value in ((results.get("metrics") or {}).get(name), results.get(name), results.get(name.rsplit("/", 1)[-1])):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value) if math.isfinite(value) else None
    return None


def run_job(task: Callable[[DictConfig], dict], cfg: DictConfig) -> Optional[float]:
    multirun = is_multirun()
    try:
        results = task(cfg)
    except Exception as err:  # noqa: BLE001 - recorded, the sweep goes on
        finish_wandb(exit_code=1)
        if not multirun:
            raise
        _record_failure(cfg, err)
        return None
    finish_wandb(exit_code=0)
    return metric_value(results, OmegaConf.select(cfg, "optimized_metric"))


class FailedSweep(Callback):
    """Hydra callback (conf/hydra/default.yaml, after the report): a multirun in which every job failed
    exits non-zero with one line, so a script or scheduler sees it; one that kept any job exits 0."""

    def on_multirun_end(self, config, **kwargs) -> None:
        from pathlib import Path

        from selfsup.report.runs import collect

        runs = collect(Path(config.hydra.sweep.dir))
        if runs and all(r.failed for r in runs):
            first = runs[0].results.get("error", "unknown error")
            print(
                f"error: all {len(runs)} job(s) of the sweep failed, the first with: {first} "
                f"(each job's error is in its results.json and report.md)",
                file=sys.stderr,
                flush=True,
            )
            sys.exit(1)


def _record_failure(cfg: DictConfig, err: Exception) -> None:
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    error = f"{type(err).__name__}: {err}"
    results = {
        "status": "failed",
        "error": error,
        "traceback": traceback.format_exc(),
        "job": hydra_cfg.job.num,
        "overrides": list(hydra_cfg.overrides.task),
    }
    for key, path in (
        ("method", "method.name"),
        ("data", "data.name"),
        ("backbone", "backbone.name"),
        ("seed", "seed"),
    ):
        try:
            results[key] = OmegaConf.select(cfg, path)
        except Exception:  # noqa: BLE001 - a broken interpolation may be what failed
            results[key] = None
    print(f"job {hydra_cfg.job.num} failed ({error}); the sweep goes on", file=sys.stderr, flush=True)
    write_results(results, hydra_cfg.runtime.output_dir)
