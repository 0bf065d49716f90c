"""The on-device augmentations (selfsup/data/gpu_augment.py, batch_ops.py) against their definitions and
torchvision, and the loader's uint8 views that feed them."""

from __future__ import annotations

import pytest
import torch
from conftest import EVERY_OP_VIEW, compose_train
from omegaconf import OmegaConf
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from selfsup.data import batch_ops
from selfsup.data.gpu_augment import DeviceAugment


def test_loader_transforms_hold_plain_floats():
    """The per-image transforms must not read the config: handed OmegaConf lists, torchvision's
    Normalize converted them element by element through OmegaConf on every image, which was half a
    CIFAR image's loader time (and the end-to-end gap to a plain loop)."""
    from torchvision.transforms import v2

    from selfsup.data.transforms import MultiViewTransform, eval_transform

    cfg = compose_train(["data.resolution=16"])
    pipelines = [*MultiViewTransform(cfg.augmentation).views, eval_transform(16, cfg.data.mean, cfg.data.std)]
    normalizers = [step for pipeline in pipelines for step in pipeline.transforms if isinstance(step, v2.Normalize)]
    assert len(normalizers) == len(pipelines)
    for step in normalizers:
        for values in (step.mean, step.std):
            assert type(values) in (list, tuple) and all(type(v) is float for v in values), type(values)


# ---------------------------------------------------------------- on-device augmentations
def _images(batch=8, size=12, seed=0):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_ops_match_torchvision():
    x = _images()
    for factor in (-0.4, 0.0, 0.1, 0.45):
        assert torch.allclose(batch_ops.adjust_hue(x, torch.full((8,), factor)), TF.adjust_hue(x, factor), atol=1e-5)
    for name in ("brightness", "contrast", "saturation"):
        ours = getattr(batch_ops, f"adjust_{name}")(x, torch.full((8,), 1.3))
        assert torch.allclose(ours, getattr(TF, f"adjust_{name}")(x, 1.3), atol=1e-3), name
    ours = batch_ops.gaussian_blur(x, 5, torch.full((8,), 1.3))
    assert torch.allclose(ours, TF.gaussian_blur(x, [5, 5], [1.3, 1.3]), atol=1e-5)


def test_jitter_is_random_per_sample_and_identity_when_not_applied():
    x = _images(1).expand(16, -1, -1, -1).contiguous()  # one image, 16 times
    out = batch_ops.color_jitter(x, 0.4, 0.4, 0.4, 0.1, p=1.0)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert len({tuple(o.flatten()[:20].tolist()) for o in out}) == 16  # 16 different draws
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(batch_ops.color_jitter(x, 0.4, 0.4, 0.4, 0.1, p=0.0), x)
    fixed_order = batch_ops.color_jitter(x, 0.4, 0.4, 0.4, 0.1, p=1.0, random_order=False)
    assert len({tuple(o.flatten()[:20].tolist()) for o in fixed_order}) == 16


def test_jitter_equals_torchvision_per_image_with_the_same_draws():
    """Per sample: apply-or-not, four factors and a random order of the four ops, each image then
    exactly torchvision's functional ops in that order (the draws replayed from the same seed)."""
    x = _images(32, 8)
    out = batch_ops.color_jitter(x, 0.4, 0.3, 0.5, 0.1, p=0.8, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    applied = torch.rand(32, generator=g) < 0.8
    factors = [
        0.6 + 0.8 * torch.rand(32, generator=g),
        0.7 + 0.6 * torch.rand(32, generator=g),
        0.5 + 1.0 * torch.rand(32, generator=g),
        -0.1 + 0.2 * torch.rand(32, generator=g),
    ]
    order = torch.rand(32, 4, generator=g).argsort(dim=1)
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    assert len({tuple(o.tolist()) for o in order}) > 10  # many different orders in one batch
    for i in range(32):
        expected = x[i]
        if applied[i]:
            for j in order[i].tolist():
                expected = ops[j](expected, factors[j][i].item())
        assert torch.allclose(out[i], expected, atol=1e-3), i


def test_grayscale_is_exact_luma_and_drawn_per_sample():
    x = _images(2000, 4)
    out = batch_ops.random_grayscale(x, p=0.2)
    gray = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    chosen = (out[:, 0] == out[:, 1]).all(dim=(1, 2)) & (out[:, 1] == out[:, 2]).all(dim=(1, 2))
    assert torch.equal(out[chosen], gray[chosen].unsqueeze(1).expand(-1, 3, -1, -1))
    assert torch.equal(out[~chosen], x[~chosen])
    assert 0.15 < chosen.float().mean() < 0.25
    assert torch.equal(batch_ops.random_grayscale(x, p=1.0)[:, 2], gray)


def test_solarize_inverts_at_and_above_the_threshold():
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(4, 3, -1, -1)
    f = batch_ops.to_float(x)
    out = batch_ops.random_solarize(f, p=1.0)
    above = x >= 128
    assert torch.equal(out[above], 1 - f[above]) and torch.equal(out[~above], f[~above])
    assert torch.equal(batch_ops.random_solarize(f, p=0.0), f)


def test_blur_keeps_a_constant_image_and_its_mean():
    x = torch.full((6, 3, 20, 20), 0.37)
    out = batch_ops.random_gaussian_blur(x, p=1.0, kernel_size=9)
    assert out.shape == x.shape and torch.allclose(out, x, atol=1e-6)
    y = _images(6, 20)
    blurred = batch_ops.gaussian_blur(y, 9, torch.linspace(0.1, 2.0, 6))
    assert torch.allclose(blurred.mean(dim=(2, 3)), y.mean(dim=(2, 3)), atol=0.02)
    assert blurred.std() < y.std()  # smoother
    sigmas = torch.tensor([0.1, 2.0])
    small, large = batch_ops.gaussian_blur(y[:2], 9, sigmas)
    assert torch.allclose(small, y[0], atol=1e-4) and not torch.allclose(large, y[1], atol=1e-2)


def _augmentation(on_device=True, resolution=16, blur=True):
    return OmegaConf.create(
        dict(
            name="t",
            resolution=resolution,
            mean=[0.5, 0.4, 0.3],
            std=[0.2, 0.25, 0.3],
            blur=blur,
            on_device=on_device,
            min_crop_scale=0.0,
            flip=True,
            views=[EVERY_OP_VIEW, EVERY_OP_VIEW],
        )
    )


def test_device_augment_shapes_dtypes_and_normalisation():
    aug = DeviceAugment(_augmentation())
    views = [(torch.rand(5, 3, 16, 16) * 255).to(torch.uint8) for _ in range(2)]
    out = aug(views)
    assert [tuple(v.shape) for v in out] == [(5, 3, 16, 16)] * 2 and all(v.dtype == torch.float32 for v in out)
    off = DeviceAugment(
        OmegaConf.merge(_augmentation(), {"views": [dict(jitter_p=0, grayscale_p=0, blur_p=0, solarize_p=0)] * 2})
    )
    plain = off(views)[0]
    expected = (views[0].float() / 255 - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor(
        [0.2, 0.25, 0.3]
    ).view(1, 3, 1, 1)
    assert torch.allclose(plain, expected, atol=1e-6)
    with pytest.raises(ValueError):
        aug(views[:1])


def test_on_device_loader_views_are_uint8_crops():
    from selfsup.data.transforms import MultiViewTransform

    image = Image.fromarray((torch.rand(24, 24, 3) * 255).to(torch.uint8).numpy())
    views = MultiViewTransform(_augmentation())(image)
    assert len(views) == 2 and all(v.dtype == torch.uint8 and v.shape == (3, 16, 16) for v in views)
    cpu_views = MultiViewTransform(_augmentation(on_device=False))(image)
    assert all(v.dtype == torch.float32 for v in cpu_views)


def test_decode_on_device_path_runs_on_cpu(tmp_path):
    from selfsup.data.datamodule import build_data

    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            for k in range(3):
                array = (torch.rand(20 + k, 28, 3) * 255).to(torch.uint8).numpy()
                suffix = "png" if k == 2 else "jpg"  # a non-JPEG goes through the CPU decoder
                Image.fromarray(array).save(tmp_path / split / cls / f"{k}.{suffix}")
    cfg = compose_train(
        [
            "data=folder",
            f"data.root={tmp_path}",
            "data.decode_on_gpu=true",
            "data.batch_size=4",
            "data.num_workers=0",
            "data.resolution=16",
        ]
    )
    cfg, datamodule = build_data(cfg)
    encoded, labels = next(iter(datamodule.train_dataloader()))
    assert len(encoded) == 4 and all(e.dtype == torch.uint8 and e.dim() == 1 for e in encoded)
    aug = DeviceAugment.from_config(cfg)
    assert aug is not None and aug.decode
    views = aug(aug.decode_and_crop(encoded, torch.device("cpu")))
    assert [tuple(v.shape) for v in views] == [(4, 3, 16, 16)] * 2 and labels.shape == (4,)


def test_device_augment_is_off_by_default():
    cfg = compose_train([])
    assert cfg.augmentation.on_device is False and cfg.data.decode_on_gpu is False and cfg.compile is False
    assert DeviceAugment.from_config(cfg) is None
