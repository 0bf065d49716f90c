"""Multi-crop views: the configured sizes and counts come out of the CPU transforms, the data loader,
the on-device colour ops and the on-device decode + crop; each resolution is one backbone forward;
global views are the ones without a resolution of their own; two-view configs are unchanged."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_train
from hydra.utils import get_class
from omegaconf import OmegaConf, open_dict
from PIL import Image

from selfsup.data.datamodule import SSLDataModule
from selfsup.data.gpu_augment import DeviceAugment
from selfsup.data.transforms import MultiViewTransform, global_view_count
from selfsup.errors import UserError

TINY_DINO = ["method.head.hidden_dim=32", "method.head.bottleneck_dim=8", "method.head.output_dim=64"]


def _multicrop(resolution: int, *overrides: str):
    cfg = compose_train(["method=dino", "data=digits", f"data.resolution={resolution}", *overrides])
    return cfg, cfg.augmentation


@pytest.mark.parametrize("resolution,local", [(224, 96), (96, 40), (32, 16), (16, 8)])
def test_local_views_are_3_7_of_the_global_side_to_a_multiple_of_8(resolution, local):
    _, augmentation = _multicrop(resolution)
    assert augmentation.local_resolution == local


def test_transform_gives_2_global_and_6_local_views_at_their_sizes():
    _, augmentation = _multicrop(32)
    views = MultiViewTransform(augmentation)(Image.new("RGB", (40, 48), (120, 30, 200)))
    assert [tuple(v.shape) for v in views] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 6
    assert global_view_count(augmentation) == 2


def test_loader_batches_each_view_at_its_size(cifar_subset):
    for on_device in (False, True):
        cfg = compose_train(
            [
                "method=dino",
                "data=folder",
                f"data.root={cifar_subset}",
                "data.resolution=32",
                "data.batch_size=4",
                "data.num_workers=0",
                f"augmentation.on_device={on_device}",
            ]
        )
        views, labels = next(iter(SSLDataModule(cfg.data, cfg.augmentation).train_dataloader()))
        assert [tuple(v.shape) for v in views] == [(4, 3, 32, 32)] * 2 + [(4, 3, 16, 16)] * 6
        assert all(v.dtype == (torch.uint8 if on_device else torch.float32) for v in views) and len(labels) == 4


def test_on_device_colour_ops_and_decode_keep_each_views_size():
    """Global 224 px and local 96 px views, blur on (its kernel follows each view's size)."""
    cfg, augmentation = _multicrop(224, "augmentation.on_device=true")
    device_augment = DeviceAugment.from_config(cfg)
    sizes = [224, 224] + [96] * 6
    generator = torch.Generator().manual_seed(0)
    out = device_augment([torch.randint(0, 256, (2, 3, s, s), dtype=torch.uint8) for s in sizes], generator)
    assert [tuple(v.shape) for v in out] == [(2, 3, s, s) for s in sizes]
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in out)

    from torchvision.io import encode_jpeg

    decoder = DeviceAugment(augmentation, decode=True)
    encoded = [encode_jpeg(torch.randint(0, 256, (3, 60, 80), dtype=torch.uint8)) for _ in range(3)]
    crops = decoder.decode_and_crop(encoded, torch.device("cpu"))
    assert [tuple(v.shape) for v in crops] == [(3, 3, s, s) for s in sizes]


def test_one_backbone_forward_per_resolution(tmp_path):
    """The student backbone runs once on the 2B global views and once on the 6B local ones; the
    teacher once, on the global views only."""
    cfg = compose_train(
        ["method=dino", "data=digits", "data.resolution=32", "backbone.cifar_stem=false", *TINY_DINO], tmp_path
    )
    model = get_class(cfg.method._target_)(cfg)
    student_calls, teacher_calls = [], []
    model.backbone.register_forward_hook(lambda m, args, out: student_calls.append(tuple(args[0].shape)))
    model.teacher[0].register_forward_hook(lambda m, args, out: teacher_calls.append(tuple(args[0].shape)))
    views = [torch.randn(4, 3, 32, 32)] * 2 + [torch.randn(4, 3, 16, 16)] * 6
    out = model.training_loss(views)
    assert student_calls == [(8, 3, 32, 32), (24, 3, 16, 16)]
    assert teacher_calls == [(8, 3, 32, 32)]
    assert out.features.shape == (4, model.feature_dim) and out.embeddings.shape == (4, 8)


def test_global_views_come_first_and_local_views_are_smaller():
    cfg, augmentation = _multicrop(32)
    with open_dict(augmentation):
        augmentation.views[0].resolution = 16
    with pytest.raises(UserError, match="before the local ones"):
        global_view_count(augmentation)
    cfg, augmentation = _multicrop(32, "augmentation.local_resolution=32")
    with pytest.raises(UserError, match="must be smaller"):
        global_view_count(augmentation)
    cfg = compose_train(["method=dino", "augmentation=simclr"])  # two global views: DINO without multi-crop
    assert global_view_count(cfg.augmentation) == 2
    get_class(cfg.method._target_).check_config(cfg, 1)


def test_two_view_augmentations_have_no_per_view_resolution():
    """Multi-crop has a schema of its own: the two-view configs compose exactly as before."""
    for method in ("simclr", "byol", "mocov2", "barlow_twins", "simsiam", "vicreg"):
        views = OmegaConf.to_container(compose_train([f"method={method}"]).augmentation.views)
        assert len(views) == 2 and all("resolution" not in v for v in views)
