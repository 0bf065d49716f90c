"""MoCo v2, BYOL and Barlow Twins on the shared base: configs compose, a few optimiser steps move
the EMA targets and the queue as they should, the MoCo queue survives a checkpoint, user mistakes
fail with one line (their learning on real images: tests/test_learning.py)."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from conftest import compose_train, cpu_trainer, run_script
from hydra.utils import get_class
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DataLoader, Dataset

from selfsup.errors import UserError
from selfsup.methods import momentum_method
from selfsup.methods.ema import cosine_momentum

METHODS = ["mocov2", "moco", "byol", "barlow_twins"]


BATCH = 8


# Tiny heads so that a step on 16 px random images takes milliseconds.
TINY_HEADS = {
    "mocov2": ["method.projector.hidden_dim=32", "method.projector.output_dim=16", "method.queue_size=32"],
    "moco": ["method.projector.hidden_dim=32", "method.projector.output_dim=16", "method.queue_size=32"],
    "byol": [
        "method.projector.hidden_dim=32",
        "method.projector.output_dim=16",
        "method.predictor.hidden_dim=32",
        "method.predictor.output_dim=16",
    ],
    "barlow_twins": ["method.projector.hidden_dim=32", "method.projector.output_dim=32"],
}


class RandomViews(Dataset):
    """Two random 16 px 'views' per item, like the multi-view training batches."""

    def __init__(self, length: int):
        generator = torch.Generator().manual_seed(0)
        self.views = torch.randn(length, 2, 3, 16, 16, generator=generator)
        self.labels = torch.randint(0, 10, (length,), generator=generator)

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, i):
        return [self.views[i, 0], self.views[i, 1]], self.labels[i]


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(method: str, tmp_path, *overrides: str):
    cfg = compose_train(
        [
            f"method={method}",
            "data=digits",
            f"data.batch_size={BATCH}",
            "backbone.cifar_stem=false",
            *TINY_HEADS[method],
            *overrides,
        ],
        tmp_path,
    )
    torch.manual_seed(0)
    return get_class(cfg.method._target_)(cfg)


def _trainer(tmp_path, max_steps: int, **kwargs) -> pl.Trainer:
    return cpu_trainer(tmp_path, max_steps=max_steps, **kwargs)


def _loader(batches: int) -> DataLoader:
    return DataLoader(RandomViews(batches * BATCH), batch_size=BATCH, drop_last=True)


def _target_of(model):
    return model.key_encoder if hasattr(model, "key_encoder") else getattr(model, "target_encoder", None)


@pytest.mark.parametrize("method", METHODS)
def test_method_config_picks_its_loss_and_augmentation(method):
    cfg = compose_train([f"method={method}"])
    expected = {
        "mocov2": ("MoCoV2", "InfoNCELoss", "moco_v2"),
        "moco": ("MoCoV2", "InfoNCELoss", "moco_v2"),
        "byol": ("BYOL", "BYOLLoss", "byol"),
        "barlow_twins": ("BarlowTwins", "BarlowTwinsLoss", "barlow_twins"),
    }[method]
    assert cfg.method.name == method
    assert cfg.method._target_.endswith(expected[0]) and cfg.loss._target_.endswith(expected[1])
    assert cfg.augmentation.name == expected[2]


def test_paper_defaults():
    moco = compose_train(["method=moco"])
    assert (moco.method.queue_size, moco.method.momentum, moco.loss.temperature) == (65536, 0.999, 0.2)
    assert (moco.method.projector.hidden_dim, moco.method.projector.output_dim) == (2048, 128)
    assert not moco.method.symmetric and not moco.method.momentum_cosine
    aug = moco.augmentation.views[0]
    assert list(aug.crop_scale) == [0.2, 1.0] and aug.jitter_p == 0.8 and aug.grayscale_p == 0.2 and aug.blur_p == 0.5

    byol = compose_train(["method=byol"])
    assert (byol.method.momentum, byol.method.momentum_cosine) == (0.996, True)
    assert (byol.method.projector.hidden_dim, byol.method.projector.output_dim) == (4096, 256)
    assert (byol.method.predictor.hidden_dim, byol.method.predictor.output_dim) == (4096, 256)
    for aug in (byol.augmentation, compose_train(["method=barlow_twins"]).augmentation):
        assert [v.blur_p for v in aug.views] == [1.0, 0.1] and [v.solarize_p for v in aug.views] == [0.0, 0.2]
        assert all((v.brightness, v.contrast, v.saturation, v.hue) == (0.4, 0.4, 0.2, 0.1) for v in aug.views)

    barlow = compose_train(["method=barlow_twins"])
    projector = barlow.method.projector
    assert (projector.hidden_dim, projector.output_dim, projector.num_layers) == (8192, 8192, 3)
    assert barlow.loss.lambda_offdiag == 0.0051


@pytest.mark.parametrize(
    "experiment,global_batch,optimizer,lr,epochs",
    [
        ("mocov2_imagenet", 256, "sgd", 0.03, 200),
        ("byol_imagenet", 4096, "lars", 0.2, 1000),
        ("barlow_twins_imagenet", 2048, "lars", 0.2, 1000),
        ("mocov2_cifar10", 256, "sgd", 0.3, 1000),
        ("byol_cifar10", 256, "lars", 1.0, 1000),
        ("barlow_twins_cifar10", 256, "lars", 0.3, 1000),
    ],
)
def test_paper_recipes_compose(experiment, global_batch, optimizer, lr, epochs):
    cfg = compose_train([f"experiment={experiment}"])
    trainer = cfg.trainer
    devices = trainer.devices if isinstance(trainer.devices, int) else 1
    assert cfg.data.batch_size * devices * trainer.num_nodes == global_batch
    assert (cfg.optimizer.name, cfg.optimizer.lr, trainer.max_epochs) == (optimizer, lr, epochs)
    if cfg.method.name == "mocov2":
        keys_per_step = global_batch * (2 if cfg.method.symmetric else 1)
        assert cfg.method.queue_size % keys_per_step == 0


@pytest.mark.parametrize("method", METHODS)
def test_training_steps_update_targets_and_queue(method, tmp_path):
    model = _model(method, tmp_path)
    target = _target_of(model)
    target_before = [p.detach().clone() for p in target.parameters()] if target is not None else None
    queue_before = model.queue.queue.clone() if hasattr(model, "queue") else None
    backbone_before = [p.detach().clone() for p in model.backbone.parameters()]
    trainer = _trainer(tmp_path, max_steps=2)
    trainer.fit(model, train_dataloaders=_loader(2))

    metrics = trainer.callback_metrics
    assert math.isfinite(metrics["train/loss"].item())
    assert any(not torch.equal(a, b) for a, b in zip(backbone_before, model.backbone.parameters())), (
        "backbone never moved"
    )
    # Per-dimension std of unit-length embeddings: ~1/sqrt(d) when healthy, ~0 collapsed, and at most
    # sqrt(B/(B-1)/d) (the variances of a unit vector's coordinates sum to <= 1; B-1: the unbiased std).
    d = model.cfg.method.projector.output_dim
    assert 0.1 / math.sqrt(d) < metrics["train/z_std"].item() <= math.sqrt(BATCH / (BATCH - 1) / d) + 1e-6
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    if target is not None:
        assert all(not p.requires_grad and id(p) not in optimized for p in target.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(target_before, target.parameters())), "EMA target never moved"
        assert "train/momentum" in metrics
    if queue_before is not None:
        assert int(model.queue.ptr) == 2 * BATCH
        assert not torch.equal(model.queue.queue[: 2 * BATCH], queue_before[: 2 * BATCH])
        assert torch.equal(model.queue.queue[2 * BATCH :], queue_before[2 * BATCH :])
        assert torch.allclose(model.queue.queue[: 2 * BATCH].norm(dim=1), torch.ones(2 * BATCH))


@pytest.mark.parametrize("method,momentum", [("mocov2", 0.999), ("byol", 0.996)])
def test_ema_after_one_step_is_the_closed_form(method, momentum, tmp_path):
    """One optimiser step, then target = m * online_before + (1 - m) * online_after (the target
    starts as a copy of the online network), with BYOL's cosine momentum at step 0 = its base."""
    model = _model(method, tmp_path)
    online = model.momentum_pairs()[0][0]
    online_before = [p.detach().clone() for p in online.parameters()]
    _trainer(tmp_path, max_steps=1).fit(model, train_dataloaders=_loader(1))
    assert model.momentum_at(0) == momentum
    for before, after, target in zip(online_before, online.parameters(), _target_of(model).parameters()):
        torch.testing.assert_close(target, momentum * before + (1 - momentum) * after.detach())


def test_byol_momentum_follows_the_cosine_schedule(tmp_path):
    model = _model("byol", tmp_path)
    _trainer(tmp_path, max_steps=4).fit(model, train_dataloaders=_loader(4))
    assert [model.momentum_at(s) for s in range(5)] == [cosine_momentum(0.996, s, 4) for s in range(5)]
    assert model.momentum_at(4) == 1.0


def test_ema_updates_once_per_optimizer_step_with_accumulation(tmp_path, monkeypatch):
    calls = []
    real_update = momentum_method.update
    monkeypatch.setattr(momentum_method, "update", lambda *a: (calls.append(a[2]), real_update(*a)))
    model = _model("byol", tmp_path)
    trainer = _trainer(tmp_path, max_steps=2, accumulate_grad_batches=2)
    trainer.fit(model, train_dataloaders=_loader(4))
    # One update after each of the 2 optimiser steps (4 batches), each with the momentum of the step it follows.
    assert trainer.global_step == 2 and calls == [cosine_momentum(0.996, 0, 2), cosine_momentum(0.996, 1, 2)]
    assert calls[1] > calls[0]


def test_moco_symmetric_enqueues_both_views(tmp_path):
    model = _model("mocov2", tmp_path, "method.symmetric=true")
    _trainer(tmp_path, max_steps=1).fit(model, train_dataloaders=_loader(1))
    assert int(model.queue.ptr) == 2 * BATCH


def test_moco_queue_and_key_encoder_restored_from_trainer_checkpoint(tmp_path):
    model = _model("mocov2", tmp_path)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True)
    _trainer(tmp_path, max_steps=2, enable_checkpointing=True, callbacks=[checkpoint]).fit(
        model, train_dataloaders=_loader(2)
    )
    saved_queue, saved_ptr = model.queue.queue.clone(), int(model.queue.ptr)
    saved_keys = [p.detach().clone() for p in model.key_encoder.parameters()]
    assert saved_ptr == 2 * BATCH and checkpoint.last_model_path

    resumed = _model("mocov2", tmp_path)
    torch.manual_seed(1)
    resumed.queue.queue.normal_()  # a fresh run's queue differs from the saved one
    seen = {}

    class SeeRestoredState(Callback):
        def on_train_start(self, trainer, pl_module):
            seen["queue"], seen["ptr"] = pl_module.queue.queue.clone(), int(pl_module.queue.ptr)
            seen["keys"] = [p.detach().clone() for p in pl_module.key_encoder.parameters()]

    _trainer(tmp_path, max_steps=3, callbacks=[SeeRestoredState()]).fit(
        resumed, train_dataloaders=_loader(2), ckpt_path=checkpoint.last_model_path
    )
    assert torch.equal(seen["queue"], saved_queue) and seen["ptr"] == saved_ptr
    assert all(torch.equal(a, b) for a, b in zip(seen["keys"], saved_keys))
    assert int(resumed.queue.ptr) == (saved_ptr + BATCH) % 32  # and training went on from there


def test_moco_queue_not_divisible_by_global_batch_fails_at_fit_start(tmp_path):
    model = _model("mocov2", tmp_path, "method.queue_size=20")  # trainer.devices=auto: checked at fit start
    with pytest.raises(UserError, match=r"queue size K=20 is not divisible by the global batch size 8"):
        _trainer(tmp_path, max_steps=1).fit(model, train_dataloaders=_loader(1))
    assert int(model.queue.ptr) == 0  # nothing was trained


def test_moco_queue_check_names_batch_and_devices(tmp_path):
    cfg = compose_train(["method=mocov2", f"data.batch_size={BATCH}", *TINY_HEADS["mocov2"]], tmp_path)
    with pytest.raises(UserError, match=r"global batch size 64 .*batch_size=8 x 8 devices"):
        get_class(cfg.method._target_).check_config(cfg, world_size=8)  # K=32, 8 per device x 8 devices


def test_train_py_queue_error_is_one_line(tmp_path):
    proc = run_script(
        "train.py",
        [
            "method=moco",
            "data.batch_size=64",
            "trainer.devices=1",
            "method.queue_size=1000",
            "trainer.enable_progress_bar=false",
        ],
        tmp_path,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and "queue_size=1000" in errors[0], proc.stderr


def test_users_moco_imagenet_command_composes():
    proc = run_script("train.py", ["method=moco", "data=imagenet", "trainer.devices=8", "--cfg", "job"])
    assert proc.returncode == 0, proc.stderr
    assert "selfsup.methods.mocov2.MoCoV2" in proc.stdout and "devices: 8" in proc.stdout


def test_missing_imagenet_root_is_one_line_error(tmp_path):
    proc = run_script("train.py", ["method=moco", "data=imagenet", "data.root=/nonexistent"], tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and "/nonexistent" in errors[0], proc.stderr
