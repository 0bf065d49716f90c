"""Image grids for the generative pretext tasks (context encoder, colorization): people would rather
look at an inpainting than read its loss.

`ImageGridMixin` gives a method the periodic `<run dir>/images/epoch_XXX.png` (and a W&B image when a
WandbLogger is attached); the method only says which rows to draw."""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import WandbLogger
from torchvision.utils import save_image

MIN_DISPLAY_SIDE = 64  # smaller images (CIFAR, digits) are enlarged, pixel-exact, to be legible


def denormalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """Undo `Normalize(mean, std)`: (B, C, H, W) back to [0, 1] pixels."""
    mean = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return (x.float() * std + mean).clamp(0.0, 1.0)


def save_image_grid(rows: dict[str, torch.Tensor], path: str | Path) -> Path:
    """One grid row per entry of `rows` (each (n, 3, H, W) in [0, 1], same n), written as a PNG."""
    images = torch.cat([r.detach().float().cpu().clamp(0.0, 1.0) for r in rows.values()])
    side = images.shape[-1]
    if side < MIN_DISPLAY_SIDE:
        images = F.interpolate(images, scale_factor=math.ceil(MIN_DISPLAY_SIDE / side), mode="nearest")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, path, nrow=len(next(iter(rows.values()))), padding=2, pad_value=1.0)
    return path


def log_image(loggers, key: str, path: str | Path, step: int, caption: str | None = None) -> None:
    """A saved picture as a W&B image, for each WandbLogger among `loggers`."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[str(path)], step=step, **({"caption": [caption]} if caption else {}))


class ImageGridMixin:
    """For an `SSLMethod` subclass (list it before the base class) implementing `image_rows(images)`:
    images (n, C, H, W) as the loader gives them -> {row name: (n, 3, H, W) in [0, 1]}.

    The first `method.image_grid_size` images of each epoch's first batch are kept; every
    `method.image_every_n_epochs` epochs and after the last one the rows are drawn in eval mode, with a
    fixed seed (the same masks every time, and the training RNG stream untouched), and saved on rank 0.
    """

    _grid_images: torch.Tensor | None = None

    def on_train_batch_start(self, batch, batch_idx):
        if batch_idx == 0:
            views, _ = batch
            self._grid_images = views[0][: self.cfg.method.image_grid_size].detach().clone()
        return super().on_train_batch_start(batch, batch_idx)

    def _is_last_epoch(self) -> bool:
        trainer = self.trainer
        max_epochs, max_steps = trainer.max_epochs, trainer.max_steps
        return (trainer.should_stop or (max_epochs is not None and 0 <= max_epochs <= self.current_epoch + 1)
                or (max_steps is not None and 0 < max_steps <= self.global_step))

    def on_train_epoch_end(self):
        super().on_train_epoch_end()
        every = self.cfg.method.image_every_n_epochs
        due = (every > 0 and (self.current_epoch + 1) % every == 0) or self._is_last_epoch()
        if self._grid_images is None or not due or not self.trainer.is_global_zero:
            return
        path = Path(self.cfg.paths.output_dir) / "images" / f"epoch_{self.current_epoch:03d}.png"
        devices = [self.device] if self.device.type == "cuda" else []
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=devices):
                torch.manual_seed(0)
                rows = self.image_rows(self._grid_images)
        finally:
            self.train(was_training)
        save_image_grid(rows, path)
        log_image(self.loggers, "train/images", path, self.global_step, caption=" / ".join(rows))

    def image_rows(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError
