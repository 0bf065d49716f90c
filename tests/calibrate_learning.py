"""Measure every learning test's run over seeds, plus its no-learning control (lr ~ 0), and write the
thresholds the learning tests assert (tests/learning_calibration.json, with the raw figures).

    .venv/bin/python tests/calibrate_learning.py [--cases simclr,rotnet] [--seeds 0,1,2]

One run at a time (never time or train in parallel on a small CPU). The threshold of a gain is
mean - 3 sd over the seeds, but never below MIN_KNN_GAIN (the noise of top-1 on 1,017 images) nor
below the control's gain + MIN_KNN_GAIN; a case whose seeds cannot clear that is reported as such.
For a pretext task (`task_metric`) its own metric is the learning signal (threshold mean - 3 sd, which
must clear the control's), and its kNN must not fall below the control's beyond noise: training on
tiles or rotated images re-estimates BatchNorm's statistics on that input even at lr ~ 0, which
alone moves the kNN of whole images (jigsaw: -0.036 at lr ~ 0); a case whose kNN may fall in its
budget (`knn_may_fall`, MAE's ViT) must only not collapse: not below the seeds' mean - 3 sd either.
A task metric that is a loss (`task_lower_is_better`) is read as a score (learning_cases.as_score):
its threshold is mean + 3 sd, which must lie below the control's loss and below the trivial baseline,
the loss of predicting the mean (`trivial_baseline`, measured here on the training images)."""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]  # the tests' helpers, the project
from conftest import CIFAR_SUBSET, compose_train, train  # noqa: E402
from learning_cases import (  # noqa: E402
    CALIBRATION,
    CASES,
    MIN_KNN_GAIN,
    as_score,
    calibration,
    command,
    knn_gain_low,
    refusal,
)


def last_logged(run_dir: Path, key: str, count: int = 3) -> float:
    with open(run_dir / "csv" / "metrics.csv") as f:
        values = [float(row[key]) for row in csv.DictReader(f) if row.get(key)]
    return sum(values[-count:]) / len(values[-count:])


def measure(name: str, seed: int, control: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        results = train(command(name, CIFAR_SUBSET, seed, control), run_dir, timeout=1800)
        task = CASES[name].task_metric
        return {
            "seed": seed,
            "knn_at_init": results["knn_top1_at_init"],
            "knn": results["knn_top1"],
            "knn_gain": results["knn_top1"] - results["knn_top1_at_init"],
            "task": last_logged(run_dir, task) if task else None,
            "train_seconds": results["train_seconds"],
            "epochs": CASES[name].epochs,
        }


def _mae_baseline(cfg, loss, images):
    """Each hidden patch predicted as its own mean: 0 in norm_pix_loss's per-patch normalised target
    (every patch scored, the expectation over random masks)."""
    from selfsup.methods.mae import patchify

    patches = patchify(images, cfg.backbone.patch_size)
    return loss(torch.zeros_like(patches), patches, torch.ones(patches.shape[:2]))


def _context_encoder_baseline(cfg, loss, images):
    """The hole and its rim predicted as the images' mean colour."""
    from selfsup.data.pretext import make_mask

    mask_cfg, (batch, _, height, width) = cfg.method.mask, images.shape
    mask = make_mask(mask_cfg.kind, batch, height, width, None, mask_cfg.area, mask_cfg.block_size)
    return loss(images.mean(dim=(0, 2, 3), keepdim=True).expand_as(images), images, mask)


def _colorization_baseline(cfg, loss, images):
    """Every pixel predicted as the colour prior of the training images (the rebalanced cross-entropy of the
    best constant prediction's shape: log prior as logits)."""
    from selfsup.data.pretext import rgb_to_lab

    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (cfg.data.mean, cfg.data.std))
    ab = rgb_to_lab((images * std + mean).clamp(0, 1))[:, 1:]
    size = cfg.data.resolution // cfg.method.output_stride
    loss.train()(torch.zeros(len(images), loss.num_outputs, size, size), ab)  # counts the colours: the prior
    prior = (loss.bin_counts / loss.bin_counts.sum()).float().clamp_min(1e-8)
    return loss.eval()(prior.log().view(1, -1, 1, 1).expand(len(images), -1, size, size), ab)


def _swav_baseline(cfg, loss, images):
    """Every view predicted as uniform over the prototypes: the best constant prediction, the codes being spread
    evenly over them (Sinkhorn-Knopp's equipartition), whose cross-entropy is ln K."""
    uniform = torch.zeros(len(images), cfg.method.num_prototypes)
    return loss([uniform, uniform], global_views=2)


def _barlow_twins_baseline(cfg, loss, images):
    """Every image embedded alike (an embedding that knows nothing of it): the standardised features are 0, so
    is the cross-correlation C, and the loss is its diagonal's sum_i (1 - 0)^2 = D, the embedding's width."""
    constant = torch.zeros(len(images), cfg.method.projector.output_dim)
    return loss(constant, constant)


BASELINES = {
    "mae": _mae_baseline,
    "barlow_twins": _barlow_twins_baseline,
    "context_encoder": _context_encoder_baseline,
    "colorization": _colorization_baseline,
    "swav": _swav_baseline,
}  # the task loss of predicting the mean


def trivial_baseline(name: str) -> float | None:
    """The task loss of predicting the mean (BASELINES, by method) on the training images as stored (no
    augmentation), normalised as the loader does; None for a method without one."""
    from hydra.utils import instantiate
    from torchvision import datasets, transforms

    cfg = compose_train(command(name, CIFAR_SUBSET, 0))
    if cfg.method.name not in BASELINES:
        return None
    size = cfg.data.resolution
    images = datasets.ImageFolder(
        Path(cfg.data.root) / "train",
        transforms.Compose(
            [
                transforms.Resize(size),
                transforms.CenterCrop(size),
                transforms.ToTensor(),
                transforms.Normalize(cfg.data.mean, cfg.data.std),
            ]
        ),
    )
    images = torch.stack([image for image, _ in images])
    with torch.no_grad():
        return float(BASELINES[cfg.method.name](cfg, instantiate(cfg.loss), images))


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(name: str, runs: list[dict], control: dict) -> dict:
    mean, sd = mean_sd([r["knn_gain"] for r in runs])
    summary = {"runs": runs, "control": control, "knn_gain_mean": mean, "knn_gain_sd": sd}
    if CASES[name].knn_must_rise:
        floor = max(MIN_KNN_GAIN, control["knn_gain"] + MIN_KNN_GAIN)
        summary.update(knn_gain_threshold=max(floor, knn_gain_low(mean, sd)))
    else:
        case, baseline = CASES[name], trivial_baseline(name)
        score, score_sd = mean_sd([as_score(case, r["task"]) for r in runs])
        threshold = score - 3 * score_sd
        knn_floor = control["knn_gain"] - MIN_KNN_GAIN
        knn_floor = min(knn_floor, knn_gain_low(mean, sd)) if case.knn_may_fall else knn_floor
        summary.update(
            task_mean=as_score(case, score),
            task_sd=score_sd,
            task_control=control["task"],
            task_baseline=baseline,
            task_threshold=as_score(case, threshold),
            knn_gain_threshold=knn_floor,
        )
    summary["refused"] = refusal(name, summary)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--fresh", action="store_true", help="re-measure the runs already in the calibration file")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    table = calibration()
    for name in args.cases.split(","):
        start = time.perf_counter()
        epochs = CASES[name].epochs  # a run kept from another budget is measured again (no "epochs": older, as now)
        kept = [r for r in table.get(name, {}).get("runs", []) if r.get("epochs", epochs) == epochs]
        done = {} if args.fresh else {r["seed"]: r for r in kept}
        runs = []
        for seed in seeds:
            runs.append(done.get(seed) or measure(name, seed, control=False))
            table.setdefault(name, {})["runs"] = runs  # kept as measured: an interrupted calibration resumes
            CALIBRATION.write_text(json.dumps(table, indent=2) + "\n")
            print(
                f"{name} seed {seed}: kNN {runs[-1]['knn_at_init']:.4f} -> {runs[-1]['knn']:.4f} "
                f"({runs[-1]['knn_gain']:+.4f})"
                + (f", task {runs[-1]['task']:.4f}" if runs[-1]["task"] is not None else ""),
                flush=True,
            )
        control = (None if args.fresh else table[name].get("control")) or measure(name, seeds[0], control=True)
        table[name] = {
            **summarise(name, runs, control),
            "command": command(name, "<cifar10-subset>", seeds[0]),
            "measured": time.strftime("%Y-%m-%d"),
            "seconds": round(time.perf_counter() - start),
        }
        s = table[name]
        print(
            f"{name}: gain {s['knn_gain_mean']:+.4f} +- {s['knn_gain_sd']:.4f} over {len(seeds)} seeds, "
            f"control (lr~0) {control['knn_gain']:+.4f} -> threshold {s['knn_gain_threshold']:+.4f}"
            + (
                f"; task {s['task_mean']:.4f} +- {s['task_sd']:.4f}, control {s['task_control']:.4f}"
                + (f", baseline {s['task_baseline']:.4f}" if s.get("task_baseline") is not None else "")
                + f" -> threshold {s['task_threshold']:.4f}"
                if "task_mean" in s
                else ""
            )
            + ("" if s["refused"] is None else f"  (does NOT hold: {s['refused']})"),
            flush=True,
        )
        CALIBRATION.write_text(json.dumps(table, indent=2) + "\n")
    print(f"calibration: {CALIBRATION}")


if __name__ == "__main__":
    main()
