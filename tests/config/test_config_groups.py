"""Every choice of every config group composes, and what it configures can be built."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from conftest import REPO, compose_train
from hydra.errors import ConfigCompositionException
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf
from pytorch_lightning.loggers import Logger

from selfsup.data.datamodule import build_data
from selfsup.errors import UserError
from selfsup.optim import build_optimizer, build_scheduler, parameter_groups

GROUPS = [
    "method",
    "backbone",
    "augmentation",
    "loss",
    "eval",
    "data",
    "strategy",
    "optimizer",
    "scheduler",
    "trainer",
    "logger",
    "callbacks",
    "paths",
    "experiment",
    "debug",
]


def choices(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))


ALL_CHOICES = [(g, c) for g in GROUPS for c in choices(g)]


def test_every_group_has_choices():
    missing = [g for g in GROUPS if g not in ("experiment", "debug") and not choices(g)]
    assert not missing, f"config groups with no YAML: {missing}"


@pytest.mark.parametrize("group,choice", ALL_CHOICES, ids=[f"{g}={c}" for g, c in ALL_CHOICES])
def test_choice_composes_and_resolves(group, choice, tmp_path):
    overrides = [f"{group}={choice}"]
    if group == "experiment" or group == "data":
        overrides.append(f"data.root={tmp_path}")  # a real path, so only resolution is checked here
    cfg = compose_train(overrides, tmp_path)
    if cfg.data.resolution is None:
        cfg.data.resolution = 32
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


@pytest.mark.parametrize("method", choices("method"))
def test_method_instantiates_and_computes_a_loss(method, tmp_path):
    cfg = compose_train([f"method={method}", "backbone.cifar_stem=false"], tmp_path)
    model = get_class(cfg.method._target_)(cfg)
    assert isinstance(model, pl.LightningModule)
    views = [torch.randn(4, 3, 32, 32) for _ in cfg.augmentation.views]
    out = model.training_loss(views)
    assert torch.isfinite(out.loss) and out.features.shape == (4, model.feature_dim)


@pytest.mark.parametrize("data", choices("data"))
def test_data_choice_builds_or_names_what_is_missing(data, tmp_path, request):
    # Only data=folder needs the CIFAR sample (skipped where it is absent); the others check the missing-root error.
    root = request.getfixturevalue("cifar_subset") if data == "folder" else tmp_path / "absent"
    cfg = compose_train([f"data={data}", f"data.root={root}"], tmp_path)
    try:
        cfg, datamodule = build_data(cfg)
    except UserError as err:
        assert str(root) in str(err) or data == "imagenet100"
        return
    views, labels = next(iter(datamodule.train_dataloader()))
    assert len(views) == len(cfg.augmentation.views)
    assert views[0].shape == (cfg.data.batch_size, 3, cfg.data.resolution, cfg.data.resolution)


@pytest.mark.parametrize("optimizer", choices("optimizer"))
@pytest.mark.parametrize("scheduler", choices("scheduler"))
def test_optimizer_and_scheduler_step(optimizer, scheduler, tmp_path):
    cfg = compose_train([f"optimizer={optimizer}", f"scheduler={scheduler}"], tmp_path)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    groups = parameter_groups(model, cfg.optimizer.weight_decay, cfg.optimizer.exclude_bias_and_norm)
    assert [g["weight_decay"] for g in groups] == [cfg.optimizer.weight_decay, 0.0]  # bias & norm: no decay
    opt = build_optimizer(cfg.optimizer, groups, lr=0.1)
    sched = build_scheduler(cfg.scheduler, opt, total_steps=10, steps_per_epoch=2)
    sched.step()  # past the first warm-up step, whose LR may be 0
    before = model[0].weight.detach().clone()
    model(torch.randn(8, 4)).pow(2).sum().backward()
    opt.step()
    assert not torch.equal(before, model[0].weight)


@pytest.mark.parametrize("group", ["logger", "callbacks"])
def test_loggers_and_callbacks_instantiate(group, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    for choice in choices(group):
        cfg = compose_train([f"{group}={choice}"], tmp_path)
        for name, node in (cfg[group] or {}).items():
            built = instantiate(node)
            assert isinstance(built, {"logger": Logger, "callbacks": pl.Callback}[group]), (choice, name, built)


def test_typos_and_wrong_types_fail_at_compose_time(tmp_path):
    for bad in ["optimizer.lrr=0.1", "optimizer.lr=fast", "data.batch_size=1.5", "method.projector.hiden_dim=8"]:
        with pytest.raises(ConfigCompositionException):
            compose_train([bad], tmp_path)


def test_method_swaps_loss_and_augmentation_but_keeps_its_defaults(tmp_path):
    cfg = compose_train([], tmp_path)
    assert cfg.method.name == "simclr" and cfg.loss._target_.endswith("NTXentLoss")
    assert cfg.augmentation.name == "simclr"
    cfg = compose_train(["loss.temperature=0.7"], tmp_path)
    assert cfg.loss.temperature == 0.7
