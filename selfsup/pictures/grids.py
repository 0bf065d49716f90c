"""views.png and neighbours.png: framed image cells laid out in rows, one row per view or per query;
and the plain grid of a method's own rows (`save_image_grid`: epoch_XXX.png)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import save_image

from selfsup.data.batch_ops import denormalize

VIEW_COLUMNS = 8  # images shown per view row
QUERIES, NEIGHBOURS = 8, 8  # neighbours.png: rows, and neighbours per row
CELL_SIDE = 64  # px an image is drawn at (small images enlarged pixel-exact, large ones shrunk)
GRID_MIN_SIDE = 64  # save_image_grid: smaller images (CIFAR, digits) enlarged, pixel-exact
BORDER = 3  # px of the coloured frame around a cell
SAME_CLASS, OTHER_CLASS, NEUTRAL = (0.1, 0.7, 0.2), (0.85, 0.1, 0.1), (1.0, 1.0, 1.0)


# --- drawing helpers ---------------------------------------------------------------------------
def _cell(image: torch.Tensor, frame=NEUTRAL) -> torch.Tensor:
    """(3, H, W) in [0, 1] -> (3, CELL_SIDE + 2 BORDER, same) framed in `frame`."""
    image = image.detach().float().cpu().clamp(0, 1)
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    side = max(image.shape[-2:])
    if side < CELL_SIDE:  # pixel-exact enlargement keeps a 16 px digit legible
        image = F.interpolate(image[None], scale_factor=CELL_SIDE // side, mode="nearest")[0]
    image = F.interpolate(
        image[None], size=(CELL_SIDE, CELL_SIDE), mode="bilinear", antialias=True, align_corners=False
    )[0].clamp(0, 1)
    framed = (
        torch.tensor(frame, dtype=image.dtype)
        .view(3, 1, 1)
        .expand(3, CELL_SIDE + 2 * BORDER, CELL_SIDE + 2 * BORDER)
        .clone()
    )
    framed[:, BORDER:-BORDER, BORDER:-BORDER] = image
    return framed


def _save_grid(
    rows: list[list[torch.Tensor]],
    row_labels: list[str],
    title: str,
    path: Path,
    column_labels: list[str] | None = None,
) -> Path:
    """Cells (framed, equal size) laid out row by row, labels on the left, one image per row of cells."""
    from matplotlib.figure import Figure

    gap = 2
    side = rows[0][0].shape[-1]
    columns = max(len(r) for r in rows)
    grid = torch.ones(3, len(rows) * (side + gap), columns * (side + gap))
    for r, cells in enumerate(rows):
        for c, cell in enumerate(cells):
            grid[:, r * (side + gap) : r * (side + gap) + side, c * (side + gap) : c * (side + gap) + side] = cell
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


def class_name(names, label: int) -> str:
    return str(names[label]) if names is not None and 0 <= label < len(names) else str(label)


# --- views.png ---------------------------------------------------------------------------------
def save_views(views: list[torch.Tensor], mean, std, path: Path) -> Path:
    """views: the batch's views as the method receives them, each (B, C, H, W), normalised."""
    count = min(VIEW_COLUMNS, len(views[0]))
    rows = [[_cell(image) for image in denormalize(view[:count], mean, std)] for view in views]
    title = f"{count} training images (columns) as the method receives them: augmented, de-normalised"
    return _save_grid(rows, [f"view {i + 1}" for i in range(len(views))], title, path)


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


def nearest_neighbours(
    bank_x, val_x, queries: list[int], k: int = NEIGHBOURS, same_images: bool = False
) -> torch.Tensor:
    """(len(queries), k) indices into the bank by cosine similarity, nearest first (as the kNN classifier);
    `same_images` (the queries are bank images): each query's own image left out."""
    bank = F.normalize(bank_x.float(), dim=1)
    query = F.normalize(val_x[queries].float(), dim=1)
    similarity = query @ bank.T
    if same_images:
        similarity[torch.arange(len(queries)), torch.tensor(queries)] = float("-inf")
    return similarity.topk(min(k, len(bank) - same_images), dim=1).indices.cpu()


def save_neighbours(features, bank_images, val_images, mean, std, class_names, path: Path) -> Path:
    """features: (bank_x, bank_y, val_x, val_y) as the final evaluation has them; bank_images / val_images:
    the datasets they were embedded from, in the same order (item i -> (normalised image, label))."""
    bank_x, bank_y, val_x, val_y = features
    labelled = bool((val_y >= 0).any())  # unlabelled images (data=images alone): no frames, no class names
    queries = query_indices(val_y)
    neighbours = nearest_neighbours(bank_x, val_x, queries, same_images=bank_images is val_images)
    bank_y, val_y = bank_y.cpu(), val_y.cpu()
    image = lambda dataset, i: denormalize(dataset[i][0][None], mean, std)[0]  # noqa: E731
    rows, labels = [], []
    for q, row in zip(queries, neighbours.tolist()):
        same = [int(bank_y[n]) == int(val_y[q]) for n in row]
        frames = [SAME_CLASS if s else OTHER_CLASS for s in same] if labelled else [NEUTRAL] * len(row)
        rows.append([_cell(image(val_images, q))] + [_cell(image(bank_images, n), f) for n, f in zip(row, frames)])
        labels.append(f"{class_name(class_names, int(val_y[q]))}: {sum(same)}/{len(row)}" if labelled else f"image {q}")
    title = (
        (
            f"validation query (left) and its {neighbours.shape[1]} nearest training images by the final "
            "features\ngreen frame: same class as the query, red: another class"
        )
        if labelled
        else (
            f"query image (left) and its {neighbours.shape[1]} nearest other images by the final features "
            "(no labels: no right/wrong frames)"
        )
    )
    columns = ["query"] + [str(i + 1) for i in range(neighbours.shape[1])]
    return _save_grid(rows, labels, title, path, columns)


def save_image_grid(rows: dict[str, torch.Tensor], path: str | Path) -> Path:
    """One grid row per entry of `rows` (each (n, 3, H, W) in [0, 1], same n), written as a PNG."""
    images = torch.cat([r.detach().float().cpu().clamp(0.0, 1.0) for r in rows.values()])
    side = images.shape[-1]
    if side < GRID_MIN_SIDE:
        images = F.interpolate(images, scale_factor=math.ceil(GRID_MIN_SIDE / side), mode="nearest")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, path, nrow=len(next(iter(rows.values()))), padding=2, pad_value=1.0)
    return path
