"""Augmentation pipelines: multi-view for pretraining, deterministic for evaluation.

Resolution, normalisation and whether blur applies come from the data config (by interpolation
in the augmentation YAML), so no augmentation YAML is copied per dataset. Built on torchvision's
transforms.v2 (joint image / box / mask transforms for dense evaluations), the ops on the decoded PIL
image and then a uint8 tensor, float, normalised: the same draws as the v1 pipeline before it
(tests/data/test_view_statistics.py). The ops run on PIL, not on uint8 tensors: per small image PIL
is the faster kernel (CIFAR sample, 32 px: about half the loader's images/s on tensors; docs/bench.md)."""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from selfsup.errors import UserError

# Every op of a view off: view_transform then returns the whole image, unchanged. The base on which one
# op at a time is switched on, to measure it alone (scripts/gpu_check.py, tests/data).
UNCHANGED_VIEW = dict(
    crop_scale=[1.0, 1.0],
    flip_p=0.0,
    jitter_p=0.0,
    brightness=0.0,
    contrast=0.0,
    saturation=0.0,
    hue=0.0,
    grayscale_p=0.0,
    blur_p=0.0,
    solarize_p=0.0,
)


def view_transform(
    view,
    resolution: int,
    mean,
    std,
    blur: bool,
    on_device: bool = False,
    min_crop_scale: float = 0.0,
    flip: bool = True,
) -> v2.Compose:
    # The floor lifts both ends: a local crop's whole range may lie below it (SwAV's (0.05, 0.14) on digits)
    crop_scale = (max(view.crop_scale[0], min_crop_scale), max(view.crop_scale[1], min_crop_scale))
    steps = [
        v2.RandomResizedCrop(resolution, scale=crop_scale, antialias=True),
        v2.RandomHorizontalFlip(view.flip_p if flip else 0.0),
    ]
    if on_device:  # uint8; the rest, batched on the training device: selfsup.data.gpu_augment.DeviceAugment
        return v2.Compose(steps + [v2.PILToTensor()])
    if view.jitter_p > 0:
        jitter = v2.ColorJitter(view.brightness, view.contrast, view.saturation, view.hue)
        steps.append(v2.RandomApply([jitter], p=view.jitter_p))
    if view.grayscale_p > 0:
        steps.append(v2.RandomGrayscale(view.grayscale_p))
    if blur and view.blur_p > 0:
        kernel = int(0.1 * resolution) // 2 * 2 + 1  # 10% of the side, odd (SimCLR App. A)
        steps.append(v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=view.blur_p))
    if view.solarize_p > 0:
        steps.append(v2.RandomSolarize(threshold=128, p=view.solarize_p))
    steps += to_normalized_float(mean, std)
    return v2.Compose(steps)


def supervised_train_transform(resolution: int, mean, std, crop_scale, flip_p: float) -> v2.Compose:
    """Random resized crop + flip: the augmentation of the standard linear protocol."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(resolution, scale=tuple(crop_scale), antialias=True),
            v2.RandomHorizontalFlip(flip_p),
            *to_normalized_float(mean, std),
        ]
    )


def to_normalized_float(mean, std) -> list[v2.Transform]:
    """PIL -> uint8 tensor -> float in [0, 1] -> normalised, with plain floats: handed the config's lists,
    torchvision would read them through OmegaConf element by element on every image (half a CIFAR
    image's loader time)."""
    return [
        v2.PILToTensor(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize([float(m) for m in mean], [float(s) for s in std]),
    ]


def view_resolution(view, augmentation) -> int:
    """A view's side in px: its own `resolution` (a local view of multi-crop) or the augmentation's."""
    return view.get("resolution") or augmentation.resolution


def global_view_count(augmentation) -> int:
    """How many views are global: those without a resolution of their own (multi-crop: the views a
    DINO teacher sees). They must come first, and every local view must be smaller than them."""
    own = [view.get("resolution") for view in augmentation.views]
    count = next((i for i, size in enumerate(own) if size is not None), len(own))
    if any(size is None for size in own[count:]):
        raise UserError("augmentation.views: list the global views (no resolution of their own) before the local ones")
    for i, size in enumerate(own[count:], start=count):
        if size >= augmentation.resolution:
            raise UserError(
                f"augmentation.views[{i}].resolution={size} is not below the global views' "
                f"{augmentation.resolution} px: a local view must be smaller (or drop its resolution)"
            )
    return count


class MultiViewTransform:
    """Returns one tensor per configured view of the same image."""

    def __init__(self, augmentation):
        self.views = [
            view_transform(
                v,
                view_resolution(v, augmentation),
                augmentation.mean,
                augmentation.std,
                augmentation.blur,
                on_device=augmentation.get("on_device", False),
                min_crop_scale=augmentation.min_crop_scale,
                flip=augmentation.flip,
            )
            for v in augmentation.views
        ]

    def __call__(self, image):
        return [view(image) for view in self.views]


def eval_transform(resolution: int, mean, std) -> v2.Compose:
    """Resize + centre crop (the 0.875 crop ratio of ImageNet protocols; none for small images)."""
    resize = resolution if resolution <= 64 else int(round(resolution / 0.875))
    return v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(resolution), *to_normalized_float(mean, std)])
