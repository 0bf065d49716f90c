"""Performance plumbing: `scripts/bench.py` in both modes (tiny), its bare loop against the Trainer's
step, the on-device augmentations against their definitions and torchvision, the fused LARS step
against the per-tensor one."""
from __future__ import annotations

import json
import sys

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from conftest import REPO, compose_train
from selfsup.data import batch_ops
from selfsup.data.gpu_augment import DeviceAugment

sys.path.insert(0, str(REPO / "scripts"))

BENCH_FIELDS = ("module_images_per_sec", "bare_images_per_sec", "ratio", "loader_images_per_sec",
                "loader_cpu_augment_images_per_sec", "loader_on_device_images_per_sec",
                "module_step_ms", "bare_step_ms", "module_peak_rss_mb", "bare_peak_rss_mb", "peak_rss_mb")


# ---------------------------------------------------------------- the bench, tiny
def test_bench_writes_every_figure(tmp_path, capsys):
    import bench

    report = bench.main(["--steps", "1", "--repeats", "1", "--warmup", "0", "--batch-size", "8",
                         "--loader-batches", "1", "--on-device", "--out", str(tmp_path)])
    path = tmp_path / "bench.json"
    assert f"bench: {path}" in capsys.readouterr().out
    saved = json.loads(path.read_text())
    assert saved == json.loads(json.dumps(report))
    for field in BENCH_FIELDS:
        assert isinstance(saved[field], (int, float)) and saved[field] > 0, field
    assert saved["config"]["on_device"] and saved["config"]["batch_size"] == 8
    assert saved["config"]["precision"] and saved["machine"]["cpu"]
    assert abs(saved["ratio"] - saved["module_images_per_sec"] / saved["bare_images_per_sec"]) < 1e-2


def _image_folder(root, classes=2, per_class=10, size=20):
    for split in ("train", "val"):
        for c in range(classes):
            (root / split / f"c{c}").mkdir(parents=True)
            for k in range(per_class):
                array = (torch.rand(size, size, 3) * 255).to(torch.uint8).numpy()
                Image.fromarray(array).save(root / split / f"c{c}" / f"{k}.png")
    return root


def test_e2e_bench_times_train_py_and_the_plain_loop(tmp_path, capsys):
    """Both sides run and report images/s and the per-step breakdown; the pipeline side really is
    train.py (its run directory, config and log are there), with its timed window from inside."""
    import bench

    root = _image_folder(tmp_path / "images")
    out = tmp_path / "bench"
    report = bench.main(["--e2e", "--methods", "byol", "--root", str(root), "--steps", "2", "--warmup", "1",
                         "--batch-size", "4", "--resolution", "16", "--workers", "0", "--out", str(out),
                         "trainer.precision=32-true"])
    printed = capsys.readouterr().out
    assert f"bench: {out / 'bench.json'}" in printed and "byol ratio" in printed
    byol = report["methods"]["byol"]
    for side in ("pipeline", "plain"):
        figures = byol[side]
        assert figures["images_per_sec"] > 0 and figures["steps"] == 2
        assert set(figures["ms_per_step"]) == {"data", "forward", "backward", "update", "targets", "framework"}
        assert figures["ms_per_step"]["forward"] > 0 and figures["ms_per_step"]["backward"] > 0
        assert figures["ms_per_step"]["targets"] > 0  # BYOL's EMA update, on both sides
        assert 0 <= figures["cpu_share_used_elsewhere"] <= 1
        assert 0 < figures["median_step_ms"] <= 1000 * figures["seconds"]
        assert figures["loader_workers_cpu_ms_per_step"] == 0  # --workers 0: the process itself is not its child
    assert byol["paired_ratios"] == [round(byol["ratio"], 4)]  # one repeat: its pair is the medians
    assert abs(byol["ratio"] - byol["pipeline"]["images_per_sec"] / byol["plain"]["images_per_sec"]) < 1e-3
    assert byol["pipeline"]["actions_ms_per_step"]  # Lightning's own actions, for a regression to point at
    run_dir = out / "byol" / "pipeline0"
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "train.log").is_file()
    assert report["config"]["batch_size"] == 4 and report["config"]["steps"] == 2
    assert json.loads((out / "bench.json").read_text()) == json.loads(json.dumps(report))


@pytest.mark.parametrize("method", ["byol", "mocov2"])
def test_bare_loop_step_is_the_trainer_step(method, tmp_path):
    """The bench's bare loop cannot drift from what is trained: one step of it and one step of the
    Trainer, from the same weights on the same batch, leave the same weights, EMA target and queue."""
    import pytorch_lightning as pl
    from bench_common import BareLoop
    from bench_step import FixedBatches
    from hydra.utils import get_class

    from selfsup.run.launch import build_trainer

    cfg = compose_train([f"method={method}", "data.batch_size=8", "trainer.precision=32-true", "trainer.max_steps=1",
                         "scheduler=constant",  # the full LR from the first step: an update large enough to compare
                         "trainer.limit_val_batches=0", "trainer.check_val_every_n_epoch=1",
                         "trainer.enable_progress_bar=false", "logger=csv",
                         "method.queue_size=64" if method == "mocov2" else "method.momentum=0.9",
                         "data.num_classes=10", "data.resolution=16", "images=false"], tmp_path)
    OmegaConf.resolve(cfg)
    torch.manual_seed(0)
    views = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]
    batch = (views, torch.randint(0, 10, (8,)))
    models = []
    for _ in range(2):
        torch.manual_seed(1)
        models.append(get_class(cfg.method._target_)(cfg))
    by_trainer, by_bare = models
    trainer = build_trainer(cfg)
    trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, pl.callbacks.ModelCheckpoint)]
    trainer.fit(by_trainer, train_dataloaders=FixedBatches(batch, 1))
    loop = BareLoop(cfg, by_bare, torch.device("cpu"), total_steps=1, steps_per_epoch=1)
    loop.start()
    loop.step(*batch)
    trained, bare = by_trainer.state_dict(), by_bare.state_dict()
    assert trained.keys() == bare.keys()
    for key in trained:
        assert torch.allclose(trained[key].float(), bare[key].float(), atol=1e-5), key
    torch.manual_seed(1)
    start = get_class(cfg.method._target_)(cfg).state_dict()
    for state in (trained, bare):  # the step and the EMA update ran (on both sides)
        changed = {k.split(".")[0] for k in state if not torch.allclose(state[k].float(), start[k].float())}
        assert {"backbone", "online_probe", by_bare.target_name} <= changed, changed
    if method == "mocov2":
        assert "queue" in changed


def test_loader_transforms_hold_plain_floats():
    """The per-image transforms must not read the config: handed OmegaConf lists, torchvision's
    Normalize converted them element by element through OmegaConf on every image, which was half a
    CIFAR image's loader time (and the end-to-end gap to a plain loop)."""
    from torchvision import transforms as T

    from selfsup.data.transforms import MultiViewTransform, eval_transform

    cfg = compose_train(["data.resolution=16"])
    pipelines = [*MultiViewTransform(cfg.augmentation).views, eval_transform(16, cfg.data.mean, cfg.data.std)]
    normalizers = [step for pipeline in pipelines for step in pipeline.transforms if isinstance(step, T.Normalize)]
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
    factors = [0.6 + 0.8 * torch.rand(32, generator=g), 0.7 + 0.6 * torch.rand(32, generator=g),
               0.5 + 1.0 * torch.rand(32, generator=g), -0.1 + 0.2 * torch.rand(32, generator=g)]
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
    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])
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
    view = dict(crop_scale=[0.08, 1.0], flip_p=0.5, jitter_p=0.8, brightness=0.4, contrast=0.4,
                saturation=0.4, hue=0.1, grayscale_p=0.2, blur_p=0.5, solarize_p=0.2)
    return OmegaConf.create(dict(name="t", resolution=resolution, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3],
                                 blur=blur, on_device=on_device, min_crop_scale=0.0, flip=True, views=[view, view]))


def test_device_augment_shapes_dtypes_and_normalisation():
    aug = DeviceAugment(_augmentation())
    views = [(torch.rand(5, 3, 16, 16) * 255).to(torch.uint8) for _ in range(2)]
    out = aug(views)
    assert [tuple(v.shape) for v in out] == [(5, 3, 16, 16)] * 2 and all(v.dtype == torch.float32 for v in out)
    off = DeviceAugment(OmegaConf.merge(_augmentation(), {"views": [dict(jitter_p=0, grayscale_p=0, blur_p=0,
                                                                                solarize_p=0)] * 2}))
    plain = off(views)[0]
    expected = (views[0].float() / 255 - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor(
        [0.2, 0.25, 0.3]).view(1, 3, 1, 1)
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
    from selfsup.data.datamodule import SSLDataModule, completed_config
    from selfsup.data.datasets import build_datasets

    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            for k in range(3):
                array = (torch.rand(20 + k, 28, 3) * 255).to(torch.uint8).numpy()
                suffix = "png" if k == 2 else "jpg"  # a non-JPEG goes through the CPU decoder
                Image.fromarray(array).save(tmp_path / split / cls / f"{k}.{suffix}")
    cfg = compose_train(["data=folder", f"data.root={tmp_path}", "data.decode_on_gpu=true", "data.batch_size=4",
                         "data.num_workers=0", "data.resolution=16"])
    datasets = build_datasets(cfg.data)
    cfg = completed_config(cfg, datasets)
    datamodule = SSLDataModule(cfg.data, cfg.augmentation, datasets=datasets)
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


# ---------------------------------------------------------------- fused LARS
def _reference_lars_step(params, state, lr, momentum, weight_decay, trust_coefficient, exclude):
    for p in params:
        update = p.grad + weight_decay * p
        if not exclude:
            w, u = p.norm(), update.norm()
            update = update * (trust_coefficient * w / u if w > 0 and u > 0 else 1.0)
        buf = state.get(p)
        state[p] = update.clone() if buf is None else buf * momentum + update
        p.sub_(lr * state[p])


@pytest.mark.parametrize("excluded_weight_decay", [0.0, 0.05])  # an excluded group decays, without the trust ratio
def test_fused_lars_matches_the_per_tensor_definition(excluded_weight_decay):
    from selfsup.optim import LARS

    torch.manual_seed(0)
    weights = [torch.randn(5, 4), torch.randn(7)]
    norms = [torch.randn(4)]
    ours_w, ours_n = [w.clone() for w in weights], [n.clone() for n in norms]
    opt = LARS([{"params": ours_w, "weight_decay": 1e-3},
                {"params": ours_n, "weight_decay": excluded_weight_decay, "lars_exclude": True}],
               lr=0.5, momentum=0.9, trust_coefficient=0.02)
    state = {}
    for step in range(4):
        grads = [torch.randn_like(w) for w in weights + norms]
        for p, g in zip(ours_w + ours_n, grads):
            p.grad = g.clone()
        opt.step()
        with torch.no_grad():
            for p, g in zip(weights + norms, grads):
                p.grad = g.clone()
            _reference_lars_step(weights, state, 0.5, 0.9, 1e-3, 0.02, exclude=False)
            _reference_lars_step(norms, state, 0.5, 0.9, excluded_weight_decay, 0.02, exclude=True)
    for a, b in zip(ours_w + ours_n, weights + norms):
        assert torch.allclose(a, b, atol=1e-6)
