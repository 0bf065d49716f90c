"""curves.png: training loss, accuracies and learning rate over steps, from Lightning's CSV log."""

from __future__ import annotations

import csv
from pathlib import Path


def read_metrics(metrics_csv: Path) -> dict[str, list[tuple[int, float]]]:
    """Lightning's CSV log as {metric: [(step, value), ...]} (empty cells skipped)."""
    series: dict[str, list[tuple[int, float]]] = {}
    if not metrics_csv.is_file():
        return series
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            step = row.get("step")
            for name, value in row.items():
                if name in ("step", "epoch") or not value or not step:
                    continue
                try:
                    series.setdefault(name, []).append((int(float(step)), float(value)))
                except ValueError:
                    continue
    return series


CURVE_PANELS = (  # (title, metrics drawn in it)
    ("training loss", ("train/loss",)),
    ("top-1 accuracy", ("val/knn_top1", "val/online_linear_top1")),
    ("learning rate", ("train/lr",)),
)


def save_curves(
    metrics_csv: Path, path: Path, knn_at_init: float | None = None, final_knn: float | None = None
) -> Path:
    """Loss, accuracies and LR over steps; kNN at init at step 0 and the final kNN (all images) at the last step."""
    from matplotlib.figure import Figure

    series = read_metrics(metrics_csv)
    last_step = max((step for points in series.values() for step, _ in points), default=0)
    fig = Figure(figsize=(13, 3.6))
    axes = fig.subplots(1, len(CURVE_PANELS))
    for ax, (title, names) in zip(axes, CURVE_PANELS):
        for name in names:
            points = sorted(series.get(name, []))
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, marker="o" if len(points) < 20 else None, markersize=3, label=name)
        if title == "top-1 accuracy":
            if knn_at_init is not None:
                ax.scatter([0], [knn_at_init], marker="s", color="grey", zorder=3, label="kNN at init")
            if final_knn is not None:
                ax.scatter(
                    [last_step], [final_knn], marker="*", s=90, color="black", zorder=3, label="final kNN (all images)"
                )
        if ax.has_data():
            ax.legend(fontsize=7)
        else:
            ax.text(
                0.5,
                0.5,
                "nothing logged\n(fewer steps than trainer.log_every_n_steps?)",
                ha="center",
                va="center",
                fontsize=8,
                transform=ax.transAxes,
            )
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
