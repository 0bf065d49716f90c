"""results.json: what every run and every failed sweep job leaves in its run directory."""

from __future__ import annotations

import dataclasses
import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from selfsup.report.markdown import score_line

if TYPE_CHECKING:
    from selfsup.run.plan import RunPlan


def write_results(results: dict, output_dir: str) -> Path:
    path = Path(output_dir) / "results.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    if line := score_line(results):  # the final accuracies, last before the path
        print(line, flush=True)
    print(f"results: {path}", flush=True)
    return path


def training_results(
    plan: RunPlan, trainer, progress: dict, at_init: dict, scores: dict, train_seconds: float, skipped: list[str]
) -> dict:
    """What a training run's results.json says (rank 0, after the final evaluation): what was trained and how
    far (`progress`: `run_progress`, rank 0's), the scores, the cost, and where the run and its checkpoint are."""
    # (imported here: train.py imports this module, through sweep.py, before its checks and before torch loads)
    from selfsup.run.checkpoint import ResumeCheckpoint
    from selfsup.run.progress import PREFIX as PROGRESS
    from selfsup.tracking import gpu_peak_memory_gb

    cfg, resume, weights = plan.cfg, plan.resume, plan.weights
    global_batch = cfg.data.batch_size * trainer.world_size * trainer.accumulate_grad_batches
    last = next((c.path for c in trainer.callbacks if isinstance(c, ResumeCheckpoint)), None)
    return {
        "method": cfg.method.name,
        "primary_eval": cfg.method.primary_eval,  # the evaluation the method's paper leads with (MAE: finetune)
        "data": cfg.data.name,
        "backbone": cfg.backbone.name,
        "encoder": cfg.method.get("eval_encoder", "online"),  # the evaluated one (momentum: the EMA copy)
        "epochs": progress["epochs"],
        "steps": progress["steps"],
        "seed": cfg.seed,
        "batch_size": cfg.data.batch_size,
        "global_batch_size": global_batch,
        "images_seen": progress["steps"] * global_batch,
        "eval_data": cfg.eval.get("data"),
        "precision": str(cfg.trainer.precision),
        "knn_top1_at_init": at_init.get("knn_top1"),
        **scores,
        "train_seconds": round(train_seconds, 2),
        "train_images_per_sec": round(progress["images_per_sec"], 2),
        "gpu_mem_peak_gb": gpu_peak_memory_gb(),
        "checkpoint": str(last) if last is not None and last.is_file() else None,
        "run_dir": cfg.paths.output_dir,
        "metrics": {
            k: v.item()
            for k, v in trainer.callback_metrics.items()  # the last logged
            if v.numel() == 1 and not k.startswith(PROGRESS)
        },
        "skipped_images": len(skipped),  # data.skip_corrupt=true: unreadable images skipped (all workers, ranks)
        "skipped_image_paths": skipped[:100],
        "nonfinite_skipped_batches": progress["nonfinite_skipped_batches"],  # on_nonfinite=skip
        "resumed_from": dataclasses.asdict(resume) if resume else None,
        "weights": weights.record() if weights is not None else None,  # weights=: the warm start's origin
    }


@contextmanager
def timed(seconds: dict, part: str):
    """seconds[part]: the wall-clock seconds of the block."""
    start = time.perf_counter()
    yield
    seconds[part] = time.perf_counter() - start


def time_split(seconds: dict, monitor: float, started: float) -> dict:
    """results.json's `seconds` and `eval_fraction`, from the parts timed (init_eval, training: the whole fit,
    final_eval, pictures): the fit's `monitor` seconds (the per-epoch kNN monitor) apart from its training, and
    the total since `started`; evaluation = kNN at init + the per-epoch monitor + the final evaluation."""
    seconds = {
        **seconds,
        "training": seconds["training"] - monitor,
        "monitor": monitor,
        "total": time.perf_counter() - started,
    }
    evaluating = seconds.get("init_eval", 0.0) + seconds["monitor"] + seconds["final_eval"]
    return {
        "seconds": {key: round(value, 2) for key, value in seconds.items()},
        "eval_fraction": round(evaluating / seconds["total"], 4),
    }


def unscored(cfg) -> dict:
    """The scores of a run without labelled data: none, and how to get them."""
    return {
        "eval_skipped": f"data={cfg.data.name} has no labels and eval.data is not set: pass eval.data=<a "
        "labelled folder or a dataset name, e.g. cifar10> for kNN and linear scores"
    }


def report_skipped(skipped: list[str], listed_in: Path) -> None:
    """data.skip_corrupt=true: the unreadable images the run skipped, on screen, and where all are listed."""
    if skipped:
        shown = ", ".join(skipped[:5]) + (f", ... ({len(skipped) - 5} more)" if len(skipped) > 5 else "")
        print(
            f"skipped {len(skipped)} unreadable images: {shown} (data.skip_corrupt=true; all listed in {listed_in})",
            flush=True,
        )
