"""What the augmentation config asks of each view is what each view gets, on the CPU (torchvision, in
the loader workers) and on the device (DeviceAugment): BYOL's asymmetric blur and solarize per view,
and the data-level floor on the crop scale and the flip switch on the decode-on-device path."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_train
from PIL import Image
from torchvision.io import encode_png
from torchvision.transforms import functional as TF

from selfsup.data.gpu_augment import DeviceAugment
from selfsup.data.transforms import MultiViewTransform

DRAWS = 200


SIZE = 96  # blur applies from 96 px (augmentation.blur)


def _checkerboard() -> torch.Tensor:
    """(3, 96, 96) uint8, 1-pixel cells of 140 and 250: every pixel at or above the solarize threshold
    (128), the largest possible difference between neighbours; mirroring maps it onto its inverse."""
    rows, cols = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    return torch.where((rows + cols) % 2 == 0, 250, 140).to(torch.uint8).expand(3, -1, -1).contiguous()


def _byol_augmentation():
    """augmentation=byol at 96 px with colour jitter and grayscale off (so that only blur and solarize
    change pixel values) and whole-image crops (so that the crop changes none)."""
    cfg = compose_train(["method=byol", "data=folder", "data.root=/unused", f"data.resolution={SIZE}"])
    for view in cfg.augmentation.views:
        view.jitter_p, view.grayscale_p, view.crop_scale = 0.0, 0.0, [1.0, 1.0]
    assert cfg.augmentation.blur
    return cfg.augmentation


def _blurred_and_solarized(images: torch.Tensor, mean, std) -> tuple[float, float]:
    """Fractions of a (N, 3, H, W) normalised batch of the checkerboard that were blurred (neighbour
    differences below the original 110/255; flip and solarize keep them) and solarized (mean below 128)."""
    pixels = images * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    neighbours = (pixels[..., 1:] - pixels[..., :-1]).abs().mean(dim=(1, 2, 3))
    blurred = neighbours < 110 / 255 - 0.01
    solarized = pixels.mean(dim=(1, 2, 3)) < 128 / 255
    return blurred.float().mean().item(), solarized.float().mean().item()


def _check_byol_views(views: list[torch.Tensor], augmentation) -> None:
    # View 1: blur p=1.0, no solarize; view 2: blur p=0.1, solarize p=0.2 (BYOL, Table 6). A blur is only
    # visible from sigma ~0.3 (sigma is uniform in [0.1, 2]): ~90% of the blurred images show it.
    first_blurred, first_solarized = _blurred_and_solarized(views[0], augmentation.mean, augmentation.std)
    second_blurred, second_solarized = _blurred_and_solarized(views[1], augmentation.mean, augmentation.std)
    assert first_blurred > 0.8 and first_solarized == 0.0, (first_blurred, first_solarized)
    assert second_blurred < 0.2 and 0.12 < second_solarized < 0.28, (second_blurred, second_solarized)


def test_byol_blurs_and_solarizes_each_view_as_configured_on_the_cpu():
    augmentation = _byol_augmentation()
    transform = MultiViewTransform(augmentation)
    image = Image.fromarray(_checkerboard().permute(1, 2, 0).numpy())
    torch.manual_seed(0)
    draws = [transform(image) for _ in range(DRAWS)]
    _check_byol_views([torch.stack([d[v] for d in draws]) for v in range(2)], augmentation)


def test_byol_blurs_and_solarizes_each_view_as_configured_on_the_device():
    augmentation = _byol_augmentation()
    batch = _checkerboard().expand(DRAWS, -1, -1, -1)
    views = DeviceAugment(augmentation)([batch, batch], generator=torch.Generator().manual_seed(0))
    _check_byol_views(views, augmentation)


def _decode_augment(min_crop_scale: float, flip: bool) -> DeviceAugment:
    cfg = compose_train(
        [
            "data=folder",
            "data.root=/unused",
            "data.resolution=16",
            "data.decode_on_gpu=true",
            f"data.min_crop_scale={min_crop_scale}",
            f"data.flip={str(flip).lower()}",
        ]
    )
    augment = DeviceAugment.from_config(cfg)
    assert augment is not None and augment.decode and [v.flip_p for v in cfg.augmentation.views] == [0.5, 0.5]
    return augment


def _images(count: int = 8) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [(torch.rand(3, 24, 24, generator=generator) * 255).to(torch.uint8) for _ in range(count)]


@pytest.mark.parametrize("flip", [False, True])
def test_decode_path_crops_no_less_than_min_crop_scale_and_flips_only_when_allowed(flip):
    """min_crop_scale=1: every crop is the whole (square) image, whatever the view's crop_scale
    (0.08-1); flip=false: no view is mirrored although each view's flip_p is 0.5."""
    images = _images()
    torch.manual_seed(0)
    views = _decode_augment(min_crop_scale=1.0, flip=flip).decode_and_crop([encode_png(i) for i in images], "cpu")
    whole = torch.stack([TF.resize(i, [16, 16], antialias=True) for i in images])
    for view in views:
        mirrored = (view == whole.flip(-1)).flatten(1).all(1) & ~(view == whole).flatten(1).all(1)
        assert ((view == whole).flatten(1).all(1) | mirrored).all()  # whole images, mirrored or not
        assert mirrored.any() == flip


def test_decode_path_without_a_floor_crops_parts_of_the_image():
    images = _images()
    torch.manual_seed(0)
    views = _decode_augment(min_crop_scale=0.0, flip=False).decode_and_crop([encode_png(i) for i in images], "cpu")
    whole = torch.stack([TF.resize(i, [16, 16], antialias=True) for i in images])
    assert not (views[0] == whole).flatten(1).all(1).any()  # the control: crop_scale 0.08-1 does crop
