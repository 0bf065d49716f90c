"""SimSiam, VICReg and DINO as methods: configs, paper defaults and recipes, the predictor's fixed LR, the logged
terms, DINO's teacher, schedules and checkpointed centre, tiny runs."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from conftest import TINY_RUN, compose_train, cpu_trainer, train
from hydra.utils import get_class
from pytorch_lightning.callbacks import Callback
from torch.utils.data import DataLoader, Dataset

from selfsup.data.transforms import view_resolution
from selfsup.errors import UserError
from selfsup.optim import scaled_lr

BATCH = 8


TINY_HEADS = {
    "simsiam": [
        "method.projector.hidden_dim=32",
        "method.projector.output_dim=16",
        "method.predictor.hidden_dim=8",
        "method.predictor.output_dim=16",
    ],
    "vicreg": ["method.expander.hidden_dim=32", "method.expander.output_dim=32"],
    "dino": ["method.head.hidden_dim=32", "method.head.bottleneck_dim=8", "method.head.output_dim=64"],
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(method: str, tmp_path, *overrides: str):
    cfg = compose_train(
        [
            f"method={method}",
            "data=digits",
            "data.resolution=32",
            f"data.batch_size={BATCH}",
            "backbone.cifar_stem=false",
            *TINY_HEADS[method],
            *overrides,
        ],
        tmp_path,
    )
    torch.manual_seed(0)
    return get_class(cfg.method._target_)(cfg)


class RandomViews(Dataset):
    """Random 'views' at the sizes a method's augmentation config gives them."""

    def __init__(self, length: int, sizes: list[int]):
        generator = torch.Generator().manual_seed(0)
        self.views = [torch.randn(length, 3, s, s, generator=generator) for s in sizes]
        self.labels = torch.randint(0, 10, (length,), generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return [v[i] for v in self.views], self.labels[i]


def _loader(model, batches: int) -> DataLoader:
    sizes = [view_resolution(v, model.cfg.augmentation) for v in model.cfg.augmentation.views]
    return DataLoader(RandomViews(batches * BATCH, sizes), batch_size=BATCH, drop_last=True)


def _fit(model, tmp_path, batches: int, callbacks=(), **kwargs) -> pl.Trainer:
    trainer = cpu_trainer(tmp_path, callbacks=list(callbacks), log_every_n_steps=1, **kwargs)
    trainer.fit(model, train_dataloaders=_loader(model, batches))
    return trainer


def test_simsiam_fixed_predictor_lr_is_not_scheduled(tmp_path):
    """fixed_predictor_lr: the predictor's parameter groups keep the base LR while the rest follow
    warm-up + cosine; without it, the predictor is scheduled like everything else."""
    model = _model("simsiam", tmp_path, "scheduler.warmup_epochs=0")
    trainer = _fit(model, tmp_path, batches=3, max_steps=3)
    groups = trainer.optimizers[0].param_groups
    constant = [g for g in groups if g.get("constant_lr")]
    assert {id(p) for g in constant for p in g["params"]} == {id(p) for p in model.predictor.parameters()}
    assert all(g["lr"] == g["initial_lr"] == pytest.approx(scaled_lr(model.cfg.optimizer, BATCH)) for g in constant)
    assert all(g["lr"] < g["initial_lr"] for g in groups if not g.get("constant_lr"))  # cosine-decayed to 0

    model = _model("simsiam", tmp_path, "method.fixed_predictor_lr=false")
    groups = _fit(model, tmp_path, batches=1, max_steps=1).optimizers[0].param_groups
    assert not any(g.get("constant_lr") for g in groups)


def test_vicreg_logs_its_terms_and_the_collapse_monitor(tmp_path):
    model = _model("vicreg", tmp_path)
    metrics = _fit(model, tmp_path, batches=2, max_steps=2).callback_metrics
    assert all(math.isfinite(metrics[f"train/vicreg_{t}_loss"].item()) for t in ("inv", "std", "cov"))
    d = model.cfg.method.expander.output_dim  # healthy ~1/sqrt(d), collapsed ~0 (see test_methods_ssl)
    assert 0.1 / math.sqrt(d) < metrics["train/z_std"].item()


def test_dino_teacher_never_receives_gradients_and_moves_by_ema(tmp_path):
    model = _model("dino", tmp_path)
    views, _ = next(iter(_loader(model, batches=1)))
    model.training_loss(views).loss.backward()
    assert all(not p.requires_grad and p.grad is None for p in model.teacher.parameters())
    assert all(p.grad is not None for p in model.head.mlp.parameters())

    model = _model("dino", tmp_path)
    student_before = [p.detach().clone() for p in model.online_encoder().parameters()]
    trainer = _fit(model, tmp_path, batches=1, max_steps=1)
    optimized = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert not any(id(p) in optimized for p in model.teacher.parameters())
    m = model.momentum_at(0)
    student_after = model.online_encoder().parameters()
    for before, after, teacher in zip(student_before, student_after, model.teacher.parameters()):
        torch.testing.assert_close(teacher, m * before + (1 - m) * after.detach())


class _Record(Callback):
    def __init__(self):
        self.temperatures, self.last_layers = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.temperatures.append(trainer.callback_metrics["train/dino_teacher_temperature"].item())

    def on_train_epoch_end(self, trainer, pl_module):
        self.last_layers.append([p.detach().clone() for p in pl_module.head.last_layer.parameters()])


def test_dino_temperature_schedule_in_steps_and_last_layer_frozen_for_the_first_epoch(tmp_path):
    """4 steps per epoch, warm-up over 1 epoch: the teacher temperature rises by (0.07 - 0.04) / 4 per
    optimiser step; the last layer does not move in epoch 0 (its gradient is dropped) and does in epoch 1."""
    model = _model("dino", tmp_path, "loss.warmup_teacher_temperature_epochs=1")
    last_before = [p.detach().clone() for p in model.head.last_layer.parameters()]
    mlp_before = [p.detach().clone() for p in model.head.mlp.parameters()]
    record = _Record()
    _fit(model, tmp_path, batches=4, callbacks=[record], max_epochs=2)
    assert record.temperatures == pytest.approx([0.04, 0.0475, 0.055, 0.0625, 0.07, 0.07, 0.07, 0.07], abs=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(last_before, record.last_layers[0]))
    assert any(not torch.equal(a, b) for a, b in zip(last_before, record.last_layers[1]))
    assert any(not torch.equal(a, b) for a, b in zip(mlp_before, model.head.mlp.parameters()))
    norm = model.head.last_layer.parametrizations.weight.original0
    assert not norm.requires_grad and torch.equal(norm, torch.ones_like(norm))  # norm_last_layer


def test_dino_center_is_checkpointed(tmp_path):
    model = _model("dino", tmp_path)
    assert "loss_fn.center" in model.state_dict()
    assert model.state_dict()["loss_fn.center"].shape == (1, 64)


@pytest.mark.parametrize(
    "method,target,loss,augmentation",
    [
        ("simsiam", "SimSiam", "NegativeCosineLoss", "simsiam"),
        ("vicreg", "VICReg", "VICRegLoss", "vicreg"),
        ("dino", "DINO", "DINOLoss", "multicrop"),
    ],
)
def test_method_config_picks_its_loss_and_augmentation(method, target, loss, augmentation):
    cfg = compose_train([f"method={method}"])
    assert cfg.method._target_.endswith(target) and cfg.loss._target_.endswith(loss)
    assert cfg.augmentation.name == augmentation


def test_paper_defaults():
    simsiam = compose_train(["method=simsiam"]).method
    projector = simsiam.projector
    assert (projector.num_layers, projector.output_dim, projector.last_batch_norm) == (3, 2048, True)
    assert (simsiam.predictor.hidden_dim, simsiam.predictor.output_dim, simsiam.fixed_predictor_lr) == (512, 2048, True)
    vicreg = compose_train(["method=vicreg"])
    assert (
        vicreg.method.expander.hidden_dim,
        vicreg.method.expander.output_dim,
        vicreg.method.expander.num_layers,
    ) == (8192, 8192, 3)
    assert (
        vicreg.loss.invariance_weight,
        vicreg.loss.variance_weight,
        vicreg.loss.covariance_weight,
        vicreg.loss.gamma,
    ) == (25.0, 25.0, 1.0, 1.0)
    dino = compose_train(["method=dino"])
    assert (dino.method.head.bottleneck_dim, dino.method.head.output_dim, dino.loss.output_dim) == (256, 65536, 65536)
    assert (
        dino.loss.student_temperature,
        dino.loss.warmup_teacher_temperature,
        dino.loss.teacher_temperature,
        dino.loss.warmup_teacher_temperature_epochs,
        dino.loss.center_momentum,
    ) == (0.1, 0.04, 0.07, 30, 0.9)
    method = dino.method
    assert (method.momentum, method.freeze_last_layer_epochs, method.head.norm_last_layer) == (0.996, 1, True)


@pytest.mark.parametrize(
    "experiment,global_batch,optimizer,lr,epochs",
    [
        ("simsiam_cifar10", 512, "sgd", 0.03, 800),
        ("simsiam_imagenet", 512, "sgd", 0.05, 100),
        ("vicreg_cifar10", 256, "lars", 0.3, 1000),
        ("vicreg_imagenet", 2048, "lars", 0.2, 1000),
        ("dino_cifar10", 256, "lars", 0.3, 1000),
        ("dino_resnet50_imagenet", 4080, "lars", 0.3, 800),
    ],
)
def test_paper_recipes_compose(experiment, global_batch, optimizer, lr, epochs, tmp_path):
    cfg = compose_train([f"experiment={experiment}", f"data.root={tmp_path}"])
    trainer = cfg.trainer
    devices = trainer.devices if isinstance(trainer.devices, int) else 1
    assert cfg.data.batch_size * devices * trainer.num_nodes == global_batch
    assert (cfg.optimizer.name, cfg.optimizer.lr, trainer.max_epochs) == (optimizer, lr, epochs)
    assert any(tag.startswith("target_") for tag in cfg.tags)  # the published number it should reach


def test_two_view_methods_refuse_multicrop():
    for method in ("simsiam", "vicreg"):
        cfg = compose_train([f"method={method}", "augmentation=multicrop"])
        with pytest.raises(UserError, match="two views"):
            get_class(cfg.method._target_).check_config(cfg, 1)


@pytest.mark.parametrize("method", ["simsiam", "vicreg"])
def test_tiny_run_writes_results_and_logs_the_collapse_monitor(method, tmp_path):
    results = train([f"method={method}", *TINY_RUN, *TINY_HEADS[method]], tmp_path)
    assert results["method"] == method and math.isfinite(results["knn_top1"])
    assert "train/z_std" in results["metrics"]
    if method == "vicreg":
        assert {"train/vicreg_inv_loss", "train/vicreg_std_loss", "train/vicreg_cov_loss"} <= set(results["metrics"])


def test_tiny_dino_run_with_multicrop_32_16_on_real_images(tmp_path, cifar_subset):
    results = train(
        [
            "method=dino",
            "data=folder",
            f"data.root={cifar_subset}",
            "data.resolution=32",
            *TINY_RUN,
            *TINY_HEADS["dino"],
        ],
        tmp_path,
    )
    assert results["method"] == "dino" and math.isfinite(results["knn_top1"])
    assert {
        "train/z_std",
        "train/dino_teacher_entropy",
        "train/dino_kl",
        "train/dino_teacher_temperature",
        "train/momentum",
    } <= set(results["metrics"])
