"""embedding.png: the validation features in 2-D, coloured by class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.data.datasets import NO_LABEL
from selfsup.pictures.grids import class_name

EMBEDDING_MAX_POINTS = 2000  # t-SNE above this many validation images: a fixed random subset


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
    labelled = classes != [NO_LABEL]  # unlabelled images (data=images alone): one colour, no legend
    cmap = colormaps["tab10" if len(classes) <= 10 else "tab20" if len(classes) <= 20 else "turbo"]
    fig = Figure(figsize=(7.5, 6))
    ax = fig.add_subplot()
    for i, c in enumerate(classes):
        mask = (val_y == c).numpy()
        colour = cmap(i if len(classes) <= 20 else i / max(1, len(classes) - 1))
        ax.scatter(points[mask, 0], points[mask, 1], s=7, color=colour, label=class_name(class_names, c))
    if labelled and len(classes) <= 20:
        ax.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    what = "validation features" if labelled else "features of unlabelled training images (no classes)"
    ax.set_title(f"{what}, {len(points)} images: PCA to 50 dims, then t-SNE{note}", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path
