"""Fine-tuning's recipe (selfsup/eval/finetune.py, eval=finetune_vit): MAE's ViT-B values as composed,
mixup and cutmix images and targets against a hand computation at a fixed lambda and box, timm's
layer-wise LR decay groups against the decay ** (depth from the top) rule on a ViT and on a timm
ResNet, drop path by timm's linear rule, and a tiny train.py run on a slice of the CIFAR sample."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY_RUN, compose_train, train
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from torch import nn

from selfsup.errors import UserError
from selfsup.eval.finetune import build_optimizer, finetune, mixing, parameter_groups
from selfsup.models.backbones import build_backbone, set_drop_path

TIMM_RESNET18 = ("resnet18", "backbone.name=timm/resnet18", "backbone.cifar_stem=false", "backbone.channels_last=false")


def _backbone(name: str, *overrides: str):
    cfg = compose_train([f"backbone={name}", "data=cifar10", *overrides])
    return build_backbone(**OmegaConf.to_container(cfg.backbone, resolve=True))


def _recipe(*overrides: str):
    return compose_train(["eval=finetune_vit", *overrides]).eval.finetune


# ------------------------------------------------------------------------------- the recipe
def test_finetune_vit_composes_with_maes_vit_b_values():
    cfg = _recipe()
    # He et al. 2022, Table 9, with ViT-B's base lr and layer decay of facebookresearch/mae FINETUNE.md
    assert (cfg.optimizer, list(cfg.betas), cfg.weight_decay) == ("adamw", [0.9, 0.999], 0.05)
    assert (cfg.lr, cfg.batch_size, cfg.layer_decay, cfg.backbone_lr_factor) == (5e-4, 1024, 0.65, 1.0)
    assert (cfg.epochs, cfg.warmup_epochs, cfg.min_lr) == (100, 5, 1e-6)
    assert (cfg.randaugment, cfg.interpolation, cfg.random_erasing) == ("rand-m9-mstd0.5-inc1", "bicubic", 0.25)
    assert (cfg.label_smoothing, cfg.mixup, cfg.cutmix, cfg.drop_path) == (0.1, 0.8, 1.0, 0.1)
    # the MAE experiments fine-tune with it: ViT-B at 0.65, the CIFAR ViT-Tiny at the smaller ViTs' 0.75
    assert compose_train(["experiment=mae_vit_base_imagenet"]).eval.finetune.layer_decay == 0.65
    tiny = compose_train(["experiment=mae_vit_tiny_cifar10"]).eval
    assert (tiny.name, tiny.finetune.layer_decay, tiny.finetune.optimizer) == ("finetune_vit", 0.75, "adamw")
    for typo in ("eval.finetune.mixupp=0.5", "eval.finetune.optimizer=adam", "eval.finetune.interpolation=cubic"):
        with pytest.raises(ConfigCompositionException):
            _recipe(typo)


def test_the_recipe_reaches_the_optimizer_at_the_per_batch_lr():
    cfg = _recipe("data=cifar10")
    vit = _backbone("vit_tiny")
    optimizer = build_optimizer(
        parameter_groups(vit, nn.Linear(vit.output_dim, 10), cfg), cfg, cfg.lr * cfg.batch_size / 256
    )
    assert isinstance(optimizer, torch.optim.AdamW)
    head = optimizer.param_groups[-1]
    assert head["lr"] == pytest.approx(2e-3) and head["betas"] == (0.9, 0.999)  # 5e-4 x 1024 / 256


@pytest.mark.parametrize(
    "override, message",
    [
        ("eval.finetune.layer_decay=1.5", r"layer_decay=1.5 must be in \(0, 1\]"),
        ("eval.finetune.drop_path=1.0", "drop_path=1.0 is a probability"),
        ("eval.finetune.cutmix=-1", "cutmix=-1.0 is a Beta"),
        ("eval.finetune.randaugment=rand-m9-mstd0.5-incl", "randaugment=rand-m9-mstd0.5-incl is not timm's"),
    ],
)
def test_bad_finetune_options_fail_in_one_line_before_pretraining(override, message):
    from selfsup.checks import check_eval_options

    check_eval_options(compose_train(["eval=finetune_vit", "eval.finetune.randaugment=rand-m9-n2-mstd0.5-inc1"]).eval)
    with pytest.raises(UserError, match=message):
        check_eval_options(compose_train(["eval=finetune_vit", override]).eval)


# ------------------------------------------------------------------------------- mixup / cutmix
def _smoothed_mix(labels: torch.Tensor, lam: float, classes: int, smoothing: float) -> torch.Tensor:
    """By hand: each row lam x its own smoothed one-hot + (1 - lam) x its mirror's (row B - 1 - i)."""
    off, on = smoothing / classes, 1 - smoothing + smoothing / classes
    rows = []
    for i, label in enumerate(labels.tolist()):
        mirror = labels[len(labels) - 1 - i].item()
        rows.append(
            [lam * (on if c == label else off) + (1 - lam) * (on if c == mirror else off) for c in range(classes)]
        )
    return torch.tensor(rows)


def test_mixup_targets_at_a_fixed_lambda(monkeypatch):
    from timm.data import Mixup

    mix = mixing(_recipe(), num_classes=4)
    monkeypatch.setattr(Mixup, "_params_per_batch", lambda self: (0.3, False))  # lambda 0.3, mixup
    x, labels = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 2])
    images, targets = mix(x.clone(), labels)
    torch.testing.assert_close(images, 0.3 * x + 0.7 * x.flip(0))
    torch.testing.assert_close(targets, _smoothed_mix(labels, 0.3, 4, 0.1))
    assert targets[0].tolist() == pytest.approx([0.3 * 0.925 + 0.7 * 0.025, 0.025, 0.3 * 0.025 + 0.7 * 0.925, 0.025])


def test_cutmix_pastes_the_box_and_weighs_targets_by_its_area(monkeypatch):
    import timm.data.mixup as timm_mixup

    mix = mixing(_recipe(), num_classes=4)
    monkeypatch.setattr(timm_mixup.Mixup, "_params_per_batch", lambda self: (0.5, True))  # cutmix
    monkeypatch.setattr(timm_mixup, "rand_bbox", lambda shape, lam, **kw: (2, 6, 0, 4))  # rows 2-5, cols 0-3
    x, labels = torch.rand(4, 3, 8, 8), torch.tensor([3, 0, 1, 2])
    images, targets = mix(x.clone(), labels)
    expected = x.clone()
    expected[:, :, 2:6, 0:4] = x.flip(0)[:, :, 2:6, 0:4]
    torch.testing.assert_close(images, expected)
    # the box covers 16 of 64 pixels: lambda is corrected from the drawn 0.5 to 1 - 16 / 64 = 0.75
    torch.testing.assert_close(targets, _smoothed_mix(labels, 0.75, 4, 0.1))


def test_no_mixing_in_the_light_recipe_and_an_odd_batch_is_refused():
    assert mixing(compose_train(["eval=finetune"]).eval.finetune, num_classes=10) is None
    cfg = compose_train(["data=cifar10", "eval=finetune_vit", "eval.finetune.batch_size=3"])
    data = SimpleNamespace(
        cfg=SimpleNamespace(**OmegaConf.to_container(cfg.data, resolve=True)), labelled=[(None, 0)] * 3, num_workers=0
    )  # refused before an image is read
    backbone = _backbone("vit_tiny")
    with pytest.raises(UserError, match="batch of 3 images must be even"):
        finetune(backbone, data, cfg.eval.finetune, "cpu")


# ------------------------------------------------------------------------------- layer-wise LR decay
def _lr_and_decay(backbone: nn.Module, cfg, lr: float) -> tuple[dict, dict]:
    head = nn.Linear(backbone.output_dim, 10)
    optimizer = build_optimizer(parameter_groups(backbone, head, cfg), cfg, lr)
    of = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    names = {
        **{n: id(p) for n, p in backbone.named_parameters()},
        **{f"head.{n}": id(p) for n, p in head.named_parameters()},
    }
    assert len(of) == len(names)  # every parameter in exactly one group
    return {n: of[i][0] for n, i in names.items()}, {n: of[i][1] for n, i in names.items()}


def test_vit_layer_decay_groups_against_a_hand_computation():
    cfg = _recipe("data=cifar10", "eval.finetune.backbone_lr_factor=0.5")
    lr, d, depth = 1e-3, 0.65, 12
    lrs, decays = _lr_and_decay(_backbone("vit_tiny"), cfg, lr)
    # MAE's rule (its lr_decay.py): the embeddings are layer 0 at decay ** (L + 1), block i of L (1-based)
    # at decay ** (L + 1 - i), the head at 1; timm puts the final norm with the last block (MAE: with the head)
    for name in ("patch_embed.proj.weight", "cls_token", "pos_embed"):
        assert lrs[name] == pytest.approx(lr * 0.5 * d ** (depth + 1)), name
    for i in range(1, depth + 1):
        for param in ("attn.qkv.weight", "mlp.fc2.bias", "norm1.weight"):
            assert lrs[f"blocks.{i - 1}.{param}"] == pytest.approx(lr * 0.5 * d ** (depth + 1 - i))
    assert lrs["norm.weight"] == pytest.approx(lr * 0.5 * d)
    assert lrs["head.weight"] == lrs["head.bias"] == pytest.approx(lr)  # the head: no backbone factor
    exempt = {n for n, wd in decays.items() if wd == 0.0}
    assert {"cls_token", "pos_embed", "norm.weight", "blocks.3.attn.qkv.bias", "head.bias"} <= exempt
    assert all(decays[n] == 0.05 for n in ("patch_embed.proj.weight", "blocks.3.attn.qkv.weight", "head.weight"))


def test_layer_decay_follows_timms_layers_on_a_timm_resnet_and_refuses_torchvision_resnets():
    cfg = _recipe("data=cifar10", "eval.finetune.layer_decay=0.5")
    lrs, _ = _lr_and_decay(_backbone(*TIMM_RESNET18), cfg, 1.0)
    # timm's group_matcher: the stem is layer 0, basic block b of stage s layer 2 (s - 1) + b + 1, the head 9
    assert lrs["conv1.weight"] == lrs["bn1.bias"] == pytest.approx(0.5**9)
    for stage in range(1, 5):
        for block in range(2):
            layer = 2 * (stage - 1) + block + 1
            assert lrs[f"layer{stage}.{block}.conv1.weight"] == pytest.approx(0.5 ** (9 - layer))
    assert lrs["head.weight"] == 1.0
    with pytest.raises(UserError, match="layer_decay=0.5 needs a backbone timm can split into layers"):
        _lr_and_decay(_backbone("resnet18"), cfg, 1.0)


def test_finetune_trains_what_pretraining_froze(monkeypatch):
    from selfsup.eval import finetune as finetune_module

    class Stop(Exception):
        pass

    def capture(groups, cfg, lr):
        captured.extend(groups)
        raise Stop  # the groups are all this test needs

    captured: list[dict] = []
    monkeypatch.setattr(finetune_module, "build_optimizer", capture)
    cfg = compose_train(["data=cifar10", "eval=finetune_vit", "eval.finetune.batch_size=2"])
    vit = _backbone("vit_tiny", "backbone.pos_embed=sincos")
    vit.patch_embed.requires_grad_(False)  # as MoCo v3 leaves it
    data = SimpleNamespace(
        cfg=SimpleNamespace(**OmegaConf.to_container(cfg.data, resolve=True)),
        labelled=[(None, 0)] * 2,
        num_workers=0,
        evaluation_loaders=lambda: (None, None),
    )
    with pytest.raises(Stop):
        finetune(vit, data, cfg.eval.finetune, "cpu")
    params = [p for g in captured for p in g["params"]]
    assert len(params) == len(list(vit.parameters())) + 2 and all(p.requires_grad for p in params)
    assert not vit.pos_embed.requires_grad  # the copy is fine-tuned; the pretrained backbone is left as it was


# ------------------------------------------------------------------------------- drop path
def test_drop_path_rises_linearly_over_the_blocks():
    from timm.layers import DropPath

    vit = _backbone("vit_tiny")
    set_drop_path(vit, 0.1)
    assert isinstance(vit.blocks[0].drop_path1, nn.Identity)  # the first block at 0
    for i in range(1, 12):
        for slot in (vit.blocks[i].drop_path1, vit.blocks[i].drop_path2):
            assert isinstance(slot, DropPath) and slot.drop_prob == pytest.approx(0.1 * i / 11)
    resnet = _backbone(*TIMM_RESNET18)
    set_drop_path(resnet, 0.2)
    assert resnet.layer4[1].drop_path.drop_prob == pytest.approx(0.2)
    assert resnet.layer2[1].drop_path.drop_prob == pytest.approx(0.2 * 3 / 7)
    with pytest.raises(UserError, match="drop_path=0.1 needs a timm backbone"):
        set_drop_path(_backbone("resnet18"), 0.1)


# ------------------------------------------------------------------------------- a tiny run
def test_tiny_finetune_vit_run_on_the_cifar_sample(cifar_subset, tmp_path):
    """MAE for 2 steps, then one epoch of the recipe on 4 images per class (40; 20 scored) of the sample,
    8 x 8 patches (16 tokens) so that it takes seconds."""
    for split, count in (("train", 4), ("val", 2)):
        for folder in sorted((cifar_subset / split).iterdir()):
            (tmp_path / "data" / split / folder.name).mkdir(parents=True)
            for image in sorted(folder.iterdir())[:count]:
                os.symlink(image, tmp_path / "data" / split / folder.name / image.name)
    results = train(
        [
            "method=mae",
            "backbone=vit_tiny",
            "backbone.patch_size=8",
            "data=folder",
            f"data.root={tmp_path / 'data'}",
            *TINY_RUN,
            "method.decoder.width=32",
            "method.decoder.depth=1",
            "method.decoder.heads=2",
            "eval=finetune_vit",
            "eval.finetune.epochs=1",
            "eval.finetune.warmup_epochs=0.5",
            "eval.finetune.batch_size=16",
            "eval.finetune.layer_decay=0.75",
        ],
        tmp_path / "run",
    )
    assert results["primary_eval"] == "finetune" and results["finetune_epochs"] == 1
    assert 0.0 <= results["finetune_top1"] <= 1.0 and (results["finetune_top1"] * 20).is_integer()
