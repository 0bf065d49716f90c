"""The colour half of the view augmentations as batched tensor ops on the training device
(`augmentation.on_device=true`), and JPEG decode + crop there too (`data.decode_on_gpu=true`).

The loader workers then only decode, crop, flip and convert to uint8 tensors (4x less to copy to
the GPU than float); colour jitter, grayscale, Gaussian blur, solarize and normalisation run here,
on the whole batch at once, with every random choice (apply or not, jitter factors and order,
blur sigma) drawn per sample, as torchvision's per-image transforms draw them in
`selfsup.data.transforms.view_transform`. The distribution is the same; the values differ only by
the uint8 rounding PIL does between steps, which this float pipeline does not. The batched ops
themselves are in `selfsup.data.batch_ops`; this module chains them per view.
"""

from __future__ import annotations

import torch
from torch import Tensor

from selfsup.data.batch_ops import (
    color_jitter,
    random_gaussian_blur,
    random_grayscale,
    random_hflip,
    random_solarize,
    to_float,
)
from selfsup.data.transforms import view_resolution


def blur_kernel_size(resolution: int) -> int:
    return int(0.1 * resolution) // 2 * 2 + 1  # 10% of the side, odd (SimCLR App. A), as transforms.py


class DeviceAugment:
    """Per view of `augmentation.views`: the colour steps of `view_transform` and normalisation, on
    a batch of cropped and flipped views. With `decode=True` it also decodes encoded JPEGs (nvJPEG on
    a GPU) and makes each view's random resized crop and flip on the device."""

    def __init__(self, augmentation, decode: bool = False, random_order: bool = True):
        self.views = list(augmentation.views)
        self.resolutions = [int(view_resolution(v, augmentation)) for v in self.views]  # multi-crop: per view
        self.blur = bool(augmentation.blur)
        self.mean, self.std = list(augmentation.mean), list(augmentation.std)
        self.decode = decode
        self.random_order = random_order
        # data-level constraints the CPU pipeline applies to the crop and flip (decode path only)
        self.min_crop_scale = float(augmentation.get("min_crop_scale", 0.0) or 0.0)
        self.flip = bool(augmentation.get("flip", True))
        self._stats: dict = {}

    @classmethod
    def from_config(cls, cfg) -> DeviceAugment | None:
        augmentation = cfg.get("augmentation")
        decode = bool(cfg.get("data") is not None and cfg.data.get("decode_on_gpu", False))
        if augmentation is None or not (augmentation.get("on_device", False) or decode):
            return None
        return cls(augmentation, decode=decode)

    def _normalize(self, images: Tensor) -> Tensor:
        key = (images.device, images.dtype)
        if key not in self._stats:
            self._stats[key] = tuple(
                torch.tensor(v, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
                for v in (self.mean, self.std)
            )
        mean, std = self._stats[key]
        return (images - mean) / std

    def augment_view(self, images: Tensor, view, generator=None) -> Tensor:
        """The colour steps of one view's configuration on a batch of it (any resolution)."""
        x = to_float(images)
        if view.jitter_p > 0:
            x = color_jitter(
                x,
                view.brightness,
                view.contrast,
                view.saturation,
                view.hue,
                view.jitter_p,
                self.random_order,
                generator,
            )
        if view.grayscale_p > 0:
            x = random_grayscale(x, view.grayscale_p, generator)
        if self.blur and view.blur_p > 0:
            x = random_gaussian_blur(x, view.blur_p, blur_kernel_size(x.shape[-1]), generator=generator)
        if view.solarize_p > 0:
            x = random_solarize(x, view.solarize_p, generator=generator)
        return self._normalize(x)

    def __call__(self, views: list[Tensor], generator=None) -> list[Tensor]:
        if len(views) != len(self.views):
            raise ValueError(f"expected {len(self.views)} views, got {len(views)}")
        return [self.augment_view(v, cfg, generator) for v, cfg in zip(views, self.views)]

    # --- data.decode_on_gpu ---------------------------------------------------------------------
    def decode_and_crop(self, encoded: list[Tensor], device: torch.device) -> list[Tensor]:
        """Encoded images (1-D uint8 CPU tensors) -> one uint8 (B, 3, R, R) batch per view on
        `device`: decoded once (nvJPEG for JPEGs on CUDA, else torchvision's CPU decoder), then
        per view a RandomResizedCrop and a horizontal flip drawn per image."""
        images = decode_images(encoded, device)
        return [self._crop_flip(images, view, size) for view, size in zip(self.views, self.resolutions)]

    def _crop_flip(self, images: list[Tensor], view, size: int) -> Tensor:
        from torchvision.transforms import RandomResizedCrop
        from torchvision.transforms import functional as TF

        scale = tuple(max(end, self.min_crop_scale) for end in view.crop_scale)  # as view_transform's floor
        ratio = (3 / 4, 4 / 3)
        crops = []
        for image in images:
            i, j, h, w = RandomResizedCrop.get_params(image, scale, ratio)  # host-side, from the known size
            crops.append(TF.resized_crop(image, i, j, h, w, [size, size], antialias=True))
        return random_hflip(torch.stack(crops), view.flip_p if self.flip else 0.0)


def _is_jpeg(data: Tensor) -> bool:
    return data.numel() > 2 and int(data[0]) == 0xFF and int(data[1]) == 0xD8


def decode_images(encoded: list[Tensor], device: torch.device) -> list[Tensor]:
    """(3, H, W) uint8 images on `device`; JPEGs in one batched nvJPEG call when `device` is CUDA."""
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    device = torch.device(device)
    out: list[Tensor | None] = [None] * len(encoded)
    jpegs = [k for k, data in enumerate(encoded) if device.type == "cuda" and _is_jpeg(data)]
    if jpegs:
        decoded = decode_jpeg([encoded[k] for k in jpegs], mode=ImageReadMode.RGB, device=device)
        for k, image in zip(jpegs, decoded):
            out[k] = image
    for k, image in enumerate(out):
        if image is None:
            out[k] = decode_image(encoded[k], mode=ImageReadMode.RGB).to(device, non_blocking=True)
    return out  # type: ignore[return-value]
