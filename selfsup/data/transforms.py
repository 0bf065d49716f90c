"""Augmentation pipelines: multi-view for pretraining, deterministic for evaluation.

Resolution, normalisation and whether blur applies come from the data config (by interpolation
in the augmentation YAML), so no augmentation YAML is copied per dataset."""
from __future__ import annotations

from torchvision import transforms as T

from selfsup.errors import UserError


def view_transform(view, resolution: int, mean, std, blur: bool, on_device: bool = False,
                   min_crop_scale: float = 0.0, flip: bool = True) -> T.Compose:
    # The floor lifts both ends: a local crop's whole range may lie below it (SwAV's (0.05, 0.14) on digits)
    crop_scale = (max(view.crop_scale[0], min_crop_scale), max(view.crop_scale[1], min_crop_scale))
    steps = [
        T.RandomResizedCrop(resolution, scale=crop_scale, antialias=True),
        T.RandomHorizontalFlip(view.flip_p if flip else 0.0),
    ]
    if on_device:  # the rest, batched on the training device: selfsup.data.gpu_augment.DeviceAugment
        return T.Compose(steps + [T.PILToTensor()])
    if view.jitter_p > 0:
        jitter = T.ColorJitter(view.brightness, view.contrast, view.saturation, view.hue)
        steps.append(T.RandomApply([jitter], p=view.jitter_p))
    if view.grayscale_p > 0:
        steps.append(T.RandomGrayscale(view.grayscale_p))
    if blur and view.blur_p > 0:
        kernel = int(0.1 * resolution) // 2 * 2 + 1  # 10% of the side, odd (SimCLR App. A)
        steps.append(T.RandomApply([T.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=view.blur_p))
    if view.solarize_p > 0:
        steps.append(T.RandomSolarize(threshold=128, p=view.solarize_p))
    steps += [T.ToTensor(), normalize(mean, std)]
    return T.Compose(steps)


def supervised_train_transform(resolution: int, mean, std, crop_scale, flip_p: float) -> T.Compose:
    """Random resized crop + flip: the augmentation of the standard linear protocol."""
    return T.Compose([
        T.RandomResizedCrop(resolution, scale=tuple(crop_scale), antialias=True),
        T.RandomHorizontalFlip(flip_p),
        T.ToTensor(),
        normalize(mean, std),
    ])


def normalize(mean, std) -> T.Normalize:
    """Normalize with plain floats: handed the config's lists, torchvision would read them through
    OmegaConf element by element on every image (half a CIFAR image's loader time)."""
    return T.Normalize([float(m) for m in mean], [float(s) for s in std])


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
            raise UserError(f"augmentation.views[{i}].resolution={size} is not below the global views' "
                            f"{augmentation.resolution} px: a local view must be smaller (or drop its resolution)")
    return count


class MultiViewTransform:
    """Returns one tensor per configured view of the same image."""

    def __init__(self, augmentation):
        self.views = [
            view_transform(
                v, view_resolution(v, augmentation), augmentation.mean, augmentation.std, augmentation.blur,
                on_device=augmentation.get("on_device", False),
                min_crop_scale=augmentation.min_crop_scale, flip=augmentation.flip,
            )
            for v in augmentation.views
        ]

    def __call__(self, image):
        return [view(image) for view in self.views]


def eval_transform(resolution: int, mean, std) -> T.Compose:
    """Resize + centre crop (the 0.875 crop ratio of ImageNet protocols; none for small images)."""
    resize = resolution if resolution <= 64 else int(round(resolution / 0.875))
    return T.Compose(
        [T.Resize(resize, antialias=True), T.CenterCrop(resolution), T.ToTensor(), normalize(mean, std)]
    )
