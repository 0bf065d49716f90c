"""Experiment tracking on Weights & Biases: the logger, its summaries, the final results and the
run id a resumed run logs to again; what the run reports of the GPU (peak memory). Whether W&B logs
online or offline is decided before torch loads, in selfsup/wandb_mode.py."""

from __future__ import annotations

import math
import uuid
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from selfsup.wandb_mode import wandb_mode

# Summaries that keep the best value over the run instead of the last one.
SUMMARY_MAX = ("val/knn_top1", "val/linear_top1", "val/finetune_top1", "val/online_linear_top1")
# results.json keys logged once, after training, as val/<key> (val/knn_top1 is the per-epoch
# monitor's; the final full kNN score goes to the summary as knn_top1).
FINAL_METRICS = ("linear_top1", "finetune_top1")
SUMMARY_KEYS = (
    ("knn_top1",)
    + FINAL_METRICS
    + (
        "knn_top1_at_init",
        "linear_weight_decay",
        "train_seconds",
        "train_images_per_sec",
        "gpu_mem_peak_gb",
        "epochs",
        "steps",
        "global_batch_size",
    )
)


class WandbRunLogger(WandbLogger):
    """Lightning's WandbLogger with the mode decided by `wandb_mode`, the whole resolved config
    logged at the top level (not nested under `cfg`), and best-value summaries for the accuracy
    metrics. Config: conf/logger/wandb.yaml."""

    def __init__(self, offline: Optional[bool] = None, tags=(), summary_max=SUMMARY_MAX, **kwargs: Any):
        self.mode = wandb_mode(offline)
        kwargs.setdefault("settings", _settings())
        super().__init__(offline=False, mode=self.mode, tags=[str(t) for t in (tags or [])], **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)  # deprecated in wandb: warns even when None
        self._summary_max = tuple(summary_max)
        self._metrics_defined = False

    @property
    def experiment(self):
        if self._experiment is None and self.mode == "online":
            try:
                run = super().experiment
            except Exception as err:  # noqa: BLE001 - no network, bad key: keep the run going offline
                warnings.warn(f"W&B online start failed ({type(err).__name__}: {err}); logging offline.", stacklevel=2)
                self.mode = self._wandb_init["mode"] = "offline"
                self._experiment = None
                run = super().experiment
        else:
            run = super().experiment
        if not self._metrics_defined and hasattr(run, "define_metric"):
            self._metrics_defined = True
            for name in self._summary_max:
                run.define_metric(name, summary="max", step_metric="trainer/global_step", step_sync=True)
        return run

    def log_hyperparams(self, params) -> None:
        params = dict(params) if isinstance(params, Mapping) else vars(params)
        cfg = params.pop("cfg", None)  # SSLMethod saves the resolved config as hparams["cfg"]
        super().log_hyperparams({**cfg, **params} if isinstance(cfg, Mapping) else params)


def _settings():
    import wandb

    # No code or git capture (nothing to upload that the config does not say), bounded start.
    return wandb.Settings(save_code=False, disable_git=True, init_timeout=60, silent=True)


def wandb_loggers(loggers) -> list[WandbLogger]:
    return [lg for lg in loggers if isinstance(lg, WandbLogger)]


def log_final_results(loggers, results: dict, step: Optional[int] = None, eval_run: bool = False) -> None:
    """Final accuracies as val/<name> metrics (so the 'max' summaries see them) and the run's
    headline numbers in the W&B summary."""
    for logger in wandb_loggers(loggers):
        final = FINAL_METRICS + (("knn_top1",) if eval_run else ())
        metrics = {f"val/{k}": results[k] for k in final if _is_number(results.get(k))}
        if metrics:
            logger.log_metrics(metrics, step=step)
        run = logger.experiment
        if hasattr(run, "summary"):
            run.summary.update({k: results[k] for k in SUMMARY_KEYS if _is_number(results.get(k))})


def log_eval_run(logger_cfg, results: dict, config: dict, name: str, group: Optional[str]) -> None:
    """eval.py: one W&B run (job_type eval) holding the evaluation's config and scores."""
    from hydra.utils import instantiate

    logger = instantiate(logger_cfg, name=name, group=group, job_type="eval")
    logger.log_hyperparams(config)
    log_final_results([logger], results, step=0, eval_run=True)


WANDB_ID_FILE = "wandb_run_id"


def wandb_run_id(run_dir: str) -> str:
    """The W&B run id of this run directory, created once: a resumed run logs to the same W&B run."""
    path = Path(run_dir) / WANDB_ID_FILE
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:12]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n")
    return run_id


def logger_kwargs(logger_cfg, run_dir: str) -> dict:
    """Extra arguments for a logger config: the stable W&B id (resume='allow' is WandbLogger's default)."""
    if "wandb" in str(logger_cfg.get("_target_", "")).lower() and not logger_cfg.get("id"):
        if rank_zero_only.rank == 0:  # only rank 0 logs to W&B (and creates the id file)
            return {"id": wandb_run_id(run_dir)}
    return {}


def gpu_peak_memory_gb() -> Optional[float]:
    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**30, 3)


class GPUMemoryMonitor(pl.Callback):
    """Logs sys/gpu_mem_peak_gb and sys/gpu_mem_reserved_gb (this process's CUDA device) per epoch."""

    def on_train_epoch_end(self, trainer, pl_module):
        if pl_module.device.type != "cuda":
            return
        pl_module.log_dict(
            {
                "sys/gpu_mem_peak_gb": torch.cuda.max_memory_allocated(pl_module.device) / 2**30,
                "sys/gpu_mem_reserved_gb": torch.cuda.memory_reserved(pl_module.device) / 2**30,
            },
            rank_zero_only=True,
        )


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_offline_run(run_dir) -> dict:
    """What an offline W&B run recorded, read back from its run-<id>.wandb log without syncing:
    {"run": {project, name, group, job_type, tags}, "config": {...}, "summary": {...},
    "metrics": {name: summary} (define_metric)}. For checks and tests; `wandb sync` uploads it."""
    import json

    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = Path(run_dir).glob("run-*.wandb")
    data = path.read_bytes()
    block, header = 32768, 7  # LevelDB log format after a 7-byte W&B file header
    records, pending, pos = [], b"", header
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer: padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # FULL or LAST
            records.append(pending)
            pending = b""
    out = {"run": {}, "config": {}, "summary": {}, "metrics": {}}

    def items(update):
        return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in update}

    for raw in records:
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            out["run"] = {
                "project": run.project,
                "name": run.display_name,
                "group": run.run_group,
                "job_type": run.job_type,
                "tags": list(run.tags),
                "id": run.run_id,
            }
            out["config"].update(items(run.config.update))
            out["summary"].update(items(run.summary.update))
        elif kind == "config":
            out["config"].update(items(record.config.update))
        elif kind == "summary":
            out["summary"].update(items(record.summary.update))
        elif kind == "metric" and record.metric.name:
            out["metrics"][record.metric.name] = str(record.metric.summary).strip()
    return out
