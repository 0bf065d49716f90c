"""The pictures an SSL researcher checks first, written by every training run to <run dir>/images/
(`images=true`, the default; `images=false` writes none), each path printed and, with a WandbLogger
attached, logged as a W&B image:

* views.png, at the first training step: a few images as the method receives them, one row per
  view, after the on-device augmentation (on_after_batch_transfer), de-normalised: are my views sensible?
* neighbours.png, at the end: validation queries and their nearest training images by the final
  evaluation's features (cosine similarity, as the kNN classifier), framed green where the neighbour
  has the query's class and red where not: do neighbours in feature space look alike?
* embedding.png, at the end: the validation features in 2-D (PCA to 50 dimensions, then t-SNE),
  coloured by class: do the classes separate?
* curves.png, at the end: training loss, kNN top-1 and learning rate over steps, from csv/metrics.csv.

Drawing uses matplotlib's object API (no pyplot state, no display needed)."""
from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from selfsup.visualize import denormalize, log_image

IMAGES_DIR = "images"
VIEW_COLUMNS = 8                 # images shown per view row
QUERIES, NEIGHBOURS = 8, 8       # neighbours.png: rows, and neighbours per row
EMBEDDING_MAX_POINTS = 2000      # t-SNE above this many validation images: a fixed random subset
CELL_SIDE = 64                   # px an image is drawn at (small images enlarged pixel-exact, large ones shrunk)
BORDER = 3                       # px of the coloured frame around a cell
SAME_CLASS, OTHER_CLASS, NEUTRAL = (0.1, 0.7, 0.2), (0.85, 0.1, 0.1), (1.0, 1.0, 1.0)


def images_dir(run_dir) -> Path:
    return Path(run_dir) / IMAGES_DIR


def _publish(path: Path, loggers, step: int) -> Path:
    print(f"image: {path}", flush=True)
    log_image(loggers, f"images/{path.stem}", path, step)
    return path


# --- drawing helpers ---------------------------------------------------------------------------
def _cell(image: torch.Tensor, frame=NEUTRAL) -> torch.Tensor:
    """(3, H, W) in [0, 1] -> (3, CELL_SIDE + 2 BORDER, same) framed in `frame`."""
    image = image.detach().float().cpu().clamp(0, 1)
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    side = max(image.shape[-2:])
    if side < CELL_SIDE:  # pixel-exact enlargement keeps a 16 px digit legible
        image = F.interpolate(image[None], scale_factor=CELL_SIDE // side, mode="nearest")[0]
    image = F.interpolate(image[None], size=(CELL_SIDE, CELL_SIDE), mode="bilinear", antialias=True,
                          align_corners=False)[0].clamp(0, 1)
    framed = torch.tensor(frame, dtype=image.dtype).view(3, 1, 1).expand(3, CELL_SIDE + 2 * BORDER,
                                                                         CELL_SIDE + 2 * BORDER).clone()
    framed[:, BORDER:-BORDER, BORDER:-BORDER] = image
    return framed


def _save_grid(rows: list[list[torch.Tensor]], row_labels: list[str], title: str, path: Path,
               column_labels: list[str] | None = None) -> Path:
    """Cells (framed, equal size) laid out row by row, labels on the left, one image per row of cells."""
    from matplotlib.figure import Figure

    gap = 2
    side = rows[0][0].shape[-1]
    columns = max(len(r) for r in rows)
    grid = torch.ones(3, len(rows) * (side + gap), columns * (side + gap))
    for r, cells in enumerate(rows):
        for c, cell in enumerate(cells):
            grid[:, r * (side + gap):r * (side + gap) + side, c * (side + gap):c * (side + gap) + side] = cell
    inch = (side + gap) / 80  # ~80 px per inch of figure
    fig = Figure(figsize=(1.8 + columns * inch, 0.6 + len(rows) * inch))
    ax = fig.add_subplot()
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_yticks([r * (side + gap) + side / 2 for r in range(len(rows))], row_labels, fontsize=8)
    if column_labels:
        ax.set_xticks([c * (side + gap) + side / 2 for c in range(len(column_labels))], column_labels, fontsize=8)
        ax.xaxis.tick_top()
    else:
        ax.set_xticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _class_name(names, label: int) -> str:
    return str(names[label]) if names is not None and 0 <= label < len(names) else str(label)


# --- views.png ---------------------------------------------------------------------------------
def save_views(views: list[torch.Tensor], mean, std, path: Path) -> Path:
    """views: the batch's views as the method receives them, each (B, C, H, W), normalised."""
    count = min(VIEW_COLUMNS, len(views[0]))
    rows = [[_cell(image) for image in denormalize(view[:count], mean, std)] for view in views]
    title = f"{count} training images (columns) as the method receives them: augmented, de-normalised"
    return _save_grid(rows, [f"view {i + 1}" for i in range(len(views))], title, path)


class ViewsPicture(pl.Callback):
    """views.png from the first training batch of the run, after the batch-transfer hooks (so after
    augmentation.on_device / data.decode_on_gpu), on rank 0."""

    def __init__(self, run_dir: str, mean, std):
        self.path = images_dir(run_dir) / "views.png"
        self.mean, self.std = list(mean), list(std)
        self._done = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._done or not trainer.is_global_zero:
            return
        self._done = True
        views, _ = batch
        _drawn("views.png", lambda: _publish(save_views(views, self.mean, self.std, self.path),
                                             trainer.loggers, trainer.global_step))


# --- neighbours.png ----------------------------------------------------------------------------
def query_indices(val_labels: torch.Tensor, count: int = QUERIES) -> list[int]:
    """The first validation image of each of `count` classes spread over the label range (the first
    images if there are fewer classes): deterministic, and the classes differ."""
    labels = val_labels.cpu()
    classes = labels.unique()
    picked = classes[torch.linspace(0, len(classes) - 1, min(count, len(classes))).round().long()]
    indices = [int((labels == c).nonzero()[0]) for c in picked]
    rest = [i for i in range(len(labels)) if i not in indices]
    return (indices + rest)[:count]


def nearest_neighbours(bank_x, val_x, queries: list[int], k: int = NEIGHBOURS) -> torch.Tensor:
    """(len(queries), k) indices into the bank by cosine similarity, nearest first (as the kNN classifier)."""
    bank = F.normalize(bank_x.float(), dim=1)
    query = F.normalize(val_x[queries].float(), dim=1)
    return (query @ bank.T).topk(min(k, len(bank)), dim=1).indices.cpu()


def save_neighbours(features, bank_images, val_images, mean, std, class_names, path: Path) -> Path:
    """features: (bank_x, bank_y, val_x, val_y) as the final evaluation has them; bank_images / val_images:
    the datasets they were embedded from, in the same order (item i -> (normalised image, label))."""
    bank_x, bank_y, val_x, val_y = features
    queries = query_indices(val_y)
    neighbours = nearest_neighbours(bank_x, val_x, queries)
    bank_y, val_y = bank_y.cpu(), val_y.cpu()
    image = lambda dataset, i: denormalize(dataset[i][0][None], mean, std)[0]  # noqa: E731
    rows, labels = [], []
    for q, row in zip(queries, neighbours.tolist()):
        same = [int(bank_y[n]) == int(val_y[q]) for n in row]
        rows.append([_cell(image(val_images, q))] + [
            _cell(image(bank_images, n), SAME_CLASS if s else OTHER_CLASS) for n, s in zip(row, same)])
        labels.append(f"{_class_name(class_names, int(val_y[q]))}: {sum(same)}/{len(row)}")
    title = (f"validation query (left) and its {neighbours.shape[1]} nearest training images by the final "
             "features\ngreen frame: same class as the query, red: another class")
    columns = ["query"] + [str(i + 1) for i in range(neighbours.shape[1])]
    return _save_grid(rows, labels, title, path, columns)


# --- embedding.png -----------------------------------------------------------------------------
def embed_2d(features: torch.Tensor) -> np.ndarray:
    """(N, D) -> (N, 2): PCA to at most 50 dimensions, then t-SNE (seeded); ~1 s of one core per
    1,000 points. One thread: t-SNE's OpenMP threads spin-wait, and on cores that are busy (loader
    workers, other jobs) that made it 20x slower."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    x = F.normalize(features.float(), dim=1).cpu().numpy()
    with threadpool_limits(limits=1):
        x = PCA(n_components=min(50, *x.shape), random_state=0).fit_transform(x)
        perplexity = min(30.0, (len(x) - 1) / 3)
        return TSNE(n_components=2, init="pca", perplexity=perplexity, max_iter=500, random_state=0).fit_transform(x)


def save_embedding(val_x, val_y, class_names, path: Path, note: str = "") -> Path:
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    val_y = val_y.cpu()
    if len(val_x) > EMBEDDING_MAX_POINTS:
        keep = torch.randperm(len(val_x), generator=torch.Generator().manual_seed(0))[:EMBEDDING_MAX_POINTS]
        val_x, val_y = val_x[keep.to(val_x.device)], val_y[keep]
    points = embed_2d(val_x)
    classes = val_y.unique().tolist()
    cmap = colormaps["tab10" if len(classes) <= 10 else "tab20" if len(classes) <= 20 else "turbo"]
    fig = Figure(figsize=(7.5, 6))
    ax = fig.add_subplot()
    for i, c in enumerate(classes):
        mask = (val_y == c).numpy()
        colour = cmap(i if len(classes) <= 20 else i / max(1, len(classes) - 1))
        ax.scatter(points[mask, 0], points[mask, 1], s=7, color=colour, label=_class_name(class_names, c))
    if len(classes) <= 20:
        ax.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"validation features, {len(points)} images: PCA to 50 dims, then t-SNE{note}", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


# --- curves.png --------------------------------------------------------------------------------
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


def save_curves(metrics_csv: Path, path: Path, knn_at_init: float | None = None, final_knn: float | None = None) -> Path:
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
                ax.scatter([last_step], [final_knn], marker="*", s=90, color="black", zorder=3,
                           label="final kNN (all images)")
        if ax.has_data():
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "nothing logged\n(fewer steps than trainer.log_every_n_steps?)",
                    ha="center", va="center", fontsize=8, transform=ax.transAxes)
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


# --- the end of a run --------------------------------------------------------------------------
def _drawn(name: str, draw) -> None:
    """A picture that fails to draw costs a warning, never the run's results."""
    try:
        draw()
    except Exception as err:  # noqa: BLE001 - the run's results matter more than its pictures
        warnings.warn(f"{name} was not drawn ({type(err).__name__}: {err})", stacklevel=2)


def save_final_pictures(run_dir: str, datamodule, features, loggers, results: dict) -> None:
    """neighbours.png, embedding.png and curves.png. `features`: (bank_x, bank_y, val_x, val_y), the final
    evaluation's, embedded from `datamodule.evaluation_loaders()` datasets in their order."""
    out, step = images_dir(run_dir), results.get("steps") or 0
    mean, std = list(datamodule.cfg.mean), list(datamodule.cfg.std)
    class_names = getattr(datamodule.labelled, "classes", None)
    bank_images, val_images = (loader.dataset for loader in datamodule.evaluation_loaders())
    knn = results.get("knn_top1")
    score = f"; kNN top-1 {knn:.3f}" if isinstance(knn, float) and math.isfinite(knn) else ""
    _drawn("neighbours.png", lambda: _publish(
        save_neighbours(features, bank_images, val_images, mean, std, class_names, out / "neighbours.png"),
        loggers, step))
    _drawn("embedding.png", lambda: _publish(
        save_embedding(features[2], features[3], class_names, out / "embedding.png", score), loggers, step))
    csv_logger = next((lg for lg in loggers if isinstance(lg, pl.loggers.CSVLogger)), None)
    if csv_logger is not None:
        _drawn("curves.png", lambda: _publish(
            save_curves(Path(csv_logger.log_dir) / "metrics.csv", out / "curves.png", results.get("knn_top1_at_init"), knn),
            loggers, step))
