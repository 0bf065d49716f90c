"""When a run draws its pictures, where they go (<run dir>/images/) and how they reach W&B: the
callbacks for views.png at the first step and for a method's own grid (epoch_XXX.png) every few
epochs, and `save_final_pictures` after the final evaluation."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger

from selfsup.pictures.curves import save_curves
from selfsup.pictures.embedding import save_embedding
from selfsup.pictures.grids import save_image_grid, save_neighbours, save_views

IMAGES_DIR = "images"


def images_dir(run_dir) -> Path:
    return Path(run_dir) / IMAGES_DIR


def log_image(loggers, key: str, path: str | Path, step: int, caption: str | None = None) -> None:
    """A saved picture as a W&B image, for each WandbLogger among `loggers`."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[str(path)], step=step, **({"caption": [caption]} if caption else {}))


def _publish(path: Path, loggers, step: int, key: str | None = None, caption: str | None = None) -> Path:
    print(f"image: {path}", flush=True)
    log_image(loggers, key or f"images/{path.stem}", path, step, caption)
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
        _drawn(
            "views.png",
            lambda: _publish(save_views(views, self.mean, self.std, self.path), trainer.loggers, trainer.global_step),
        )


class MethodGrid(pl.Callback):
    """epoch_XXX.png for a method that draws what it learned to produce (MAE, context encoder,
    colorization: its `image_rows(images)`, images (n, C, H, W) as the loader gives them -> {row name:
    (n, 3, H, W) in [0, 1]}). The first `grid_size` images of each epoch's first batch are kept; every
    `every_n_epochs` epochs and after the last one the rows are drawn in eval mode, with a fixed seed
    (the same masks every time, and the training RNG stream untouched), on rank 0."""

    def __init__(self, run_dir: str, every_n_epochs: int, grid_size: int):
        self.dir, self.every_n_epochs, self.grid_size = images_dir(run_dir), every_n_epochs, grid_size
        self._images: torch.Tensor | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            views, _ = batch
            self._images = views[0][: self.grid_size].detach().clone()

    def on_train_epoch_end(self, trainer, pl_module):
        epoch, every = trainer.current_epoch, self.every_n_epochs
        due = (every > 0 and (epoch + 1) % every == 0) or _last_epoch(trainer)
        if self._images is None or not due or not trainer.is_global_zero:
            return
        devices = [pl_module.device] if pl_module.device.type == "cuda" else []
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=devices):
                torch.manual_seed(0)
                rows = pl_module.image_rows(self._images)
        finally:
            pl_module.train(was_training)
        path = save_image_grid(rows, self.dir / f"epoch_{epoch:03d}.png")
        _publish(path, trainer.loggers, trainer.global_step, key="train/images", caption=" / ".join(rows))


def _last_epoch(trainer: pl.Trainer) -> bool:
    max_epochs, max_steps = trainer.max_epochs, trainer.max_steps
    return (
        trainer.should_stop
        or (max_epochs is not None and 0 <= max_epochs <= trainer.current_epoch + 1)
        or (max_steps is not None and 0 < max_steps <= trainer.global_step)
    )


def save_final_pictures(run_dir: str, datamodule, features, loggers, results: dict) -> None:
    """neighbours.png, embedding.png and curves.png. `features`: (bank_x, bank_y, val_x, val_y), the final
    evaluation's, embedded from `datamodule.evaluation_loaders()` datasets in their order."""
    out, step = images_dir(run_dir), results.get("steps") or 0
    mean, std = list(datamodule.cfg.mean), list(datamodule.cfg.std)
    class_names = getattr(datamodule.labelled, "classes", None)
    bank_images, val_images = (loader.dataset for loader in datamodule.evaluation_loaders())
    knn = results.get("knn_top1")
    score = f"; kNN top-1 {knn:.3f}" if isinstance(knn, float) and math.isfinite(knn) else ""
    _drawn(
        "neighbours.png",
        lambda: _publish(
            save_neighbours(features, bank_images, val_images, mean, std, class_names, out / "neighbours.png"),
            loggers,
            step,
        ),
    )
    _drawn(
        "embedding.png",
        lambda: _publish(
            save_embedding(features[2], features[3], class_names, out / "embedding.png", score), loggers, step
        ),
    )
    csv_logger = next((lg for lg in loggers if isinstance(lg, pl.loggers.CSVLogger)), None)
    if csv_logger is not None:
        _drawn(
            "curves.png",
            lambda: _publish(
                save_curves(
                    Path(csv_logger.log_dir) / "metrics.csv", out / "curves.png", results.get("knn_top1_at_init"), knn
                ),
                loggers,
                step,
            ),
        )
