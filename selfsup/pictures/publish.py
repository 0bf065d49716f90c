"""When a run draws its pictures, where they go (<run dir>/images/) and how they reach W&B: the
callback for views.png at the first step and `save_final_pictures` after the final evaluation."""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytorch_lightning as pl

from selfsup.pictures.curves import save_curves
from selfsup.pictures.embedding import save_embedding
from selfsup.pictures.grids import save_neighbours, save_views
from selfsup.visualize import log_image

IMAGES_DIR = "images"


def images_dir(run_dir) -> Path:
    return Path(run_dir) / IMAGES_DIR


def _publish(path: Path, loggers, step: int) -> Path:
    print(f"image: {path}", flush=True)
    log_image(loggers, f"images/{path.stem}", path, step)
    return path


def _drawn(name: str, draw) -> None:
    """A picture that fails to draw costs a warning, never the run's results."""
    try:
        draw()
    except Exception as err:  # noqa: BLE001 - the run's results matter more than its pictures
        warnings.warn(f"{name} was not drawn ({type(err).__name__}: {err})", stacklevel=2)


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
