"""ViT backbones and the methods on them (MAE, MoCo v3, DINO): patch size and width, the no-decay set, MAE's
masking, MoCo v3's frozen patch projection, tiny runs (fine-tuning's layer-wise LR decay: tests/eval/test_finetune_recipe.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN, compose_train, train
from hydra.utils import get_class
from omegaconf import OmegaConf
from torch import nn

from selfsup.errors import UserError
from selfsup.methods.mae import patchify, random_masking, unpatchify
from selfsup.models.backbones import build_backbone
from selfsup.optim import parameter_groups

# Small heads and decoder so that a step on 32 px random images takes a fraction of a second.
TINY_MAE = ["method.decoder.width=32", "method.decoder.depth=1", "method.decoder.heads=2"]


TINY_MOCOV3 = [
    "method.projector.hidden_dim=32",
    "method.projector.output_dim=16",
    "method.predictor.hidden_dim=32",
    "method.predictor.output_dim=16",
]


TINY_DINO = ["method.head.hidden_dim=32", "method.head.bottleneck_dim=16", "method.head.output_dim=64"]


def _backbone(name: str, *overrides: str):
    cfg = compose_train([f"backbone={name}", *overrides])
    return build_backbone(**OmegaConf.to_container(cfg.backbone, resolve=True))


def _model(method: str, tmp_path, *overrides: str):
    cfg = compose_train([f"method={method}", "data=cifar10", *overrides], tmp_path)
    torch.manual_seed(0)
    return get_class(cfg.method._target_)(cfg)


# ------------------------------------------------------------------------------- ViT backbones
@pytest.mark.parametrize("name, width", [("vit_tiny", 192), ("vit_small", 384), ("vit_base", 768)])
def test_vit_feature_width_and_patch_size_follow_the_resolution(name, width):
    vit = _backbone(name, "data=cifar10")
    assert (vit.output_dim, vit.patch_size, tuple(vit.patch_embed.grid_size)) == (width, 4, (8, 8))
    assert vit(torch.randn(2, 3, 32, 32)).shape == (2, width)
    if name == "vit_tiny":
        assert _backbone(name, "data=imagenet").patch_size == 16  # 14 x 14 tokens at 224 px
        assert _backbone(name, "data=stl10").patch_size == 8
        assert _backbone(name, "data=cifar10", "backbone.patch_size=8").patch_embed.grid_size == (4, 4)


def test_vit_mistakes_fail_in_one_line():
    with pytest.raises(UserError, match="patch_size=5 does not divide data.resolution=32"):
        _backbone("vit_tiny", "data=cifar10", "backbone.patch_size=5")
    with pytest.raises(UserError, match="channels_last apply to ResNets only"):
        _backbone("vit_tiny", "data=cifar10", "backbone.channels_last=true")


def test_vit_mean_pooling_and_fixed_sincos_positions():
    torch.manual_seed(0)
    vit = _backbone("vit_tiny", "data=cifar10", "backbone.pool=mean", "backbone.pos_embed=sincos")
    x = torch.randn(2, 3, 32, 32)
    tokens = vit.forward_features(x)
    torch.testing.assert_close(vit(x), tokens[:, 1:].mean(dim=1))  # the patch tokens' mean, not CLS
    assert not vit.pos_embed.requires_grad and (vit.pos_embed[0, 0] == 0).all()


def test_no_decay_set_is_biases_norms_position_table_cls_and_mask_tokens(tmp_path):
    model = _model("mae", tmp_path, "backbone=vit_tiny", *TINY_MAE)
    modules = nn.ModuleList([model.backbone, model.decoder])
    decay, no_decay = parameter_groups(modules, 0.05, exclude_bias_and_norm=True)
    names = {id(p): n for n, p in modules.named_parameters()}
    exempt = {names[id(p)] for p in no_decay["params"]}
    assert {
        "0.cls_token",
        "0.pos_embed",
        "1.mask_token",
        "0.patch_embed.proj.bias",
        "0.norm.weight",
        "0.blocks.0.norm1.weight",
        "0.blocks.0.attn.qkv.bias",
    } <= exempt
    assert all(
        p.ndim == 1 or names[id(p)] in ("0.cls_token", "0.pos_embed", "1.mask_token") for p in no_decay["params"]
    )
    assert all(p.ndim >= 2 and names[id(p)] not in exempt for p in decay["params"])
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0


# ------------------------------------------------------------------------------- MAE
def test_patchify_is_row_major_patches_and_unpatchify_inverts_it():
    x = torch.randn(2, 3, 32, 48)
    patches = patchify(x, 8)
    assert patches.shape == (2, 4 * 6, 8 * 8 * 3)
    # patch (row 1, column 2) holds that 8x8 square, pixels row by row, channels last
    torch.testing.assert_close(patches[:, 1 * 6 + 2], x[:, :, 8:16, 16:24].permute(0, 2, 3, 1).reshape(2, -1))
    assert torch.equal(unpatchify(patches, 8, (4, 6)), x)


def test_masking_hides_exactly_the_ratio_per_image_and_restore_undoes_the_shuffle():
    torch.manual_seed(0)
    keep, restore, mask = random_masking(6, 64, 0.75, "cpu")
    assert keep.shape == (6, 16) and mask.sum(dim=1).tolist() == [48.0] * 6
    for i in range(6):
        assert (mask[i, keep[i]] == 0).all() and len(set(keep[i].tolist())) == 16
        assert (restore[i, keep[i]] == torch.arange(16)).all()  # the visible tokens come first, in kept order
    assert not torch.equal(mask[0], mask[1])  # independent per image


def test_mae_encoder_sees_only_the_visible_tokens(tmp_path):
    model = _model("mae", tmp_path, "backbone=vit_tiny", *TINY_MAE)
    lengths = []
    model.backbone.blocks[0].register_forward_pre_hook(lambda module, args: lengths.append(args[0].shape[1]))
    pred, mask, cls = model.reconstruct(torch.randn(3, 3, 32, 32))
    assert lengths == [1 + 16]  # CLS + 25% of the 8 x 8 patches
    assert pred.shape == (3, 64, 4 * 4 * 3) and mask.sum(dim=1).tolist() == [48.0] * 3 and cls.shape == (3, 192)
    out = model.training_loss([torch.randn(3, 3, 32, 32)])
    assert lengths[1:] == [1 + 16]  # one encoder forward per step: the online probe reads its CLS token
    out.loss.backward()
    assert model.decoder.mask_token.grad.abs().sum() > 0 and model.backbone.cls_token.grad.abs().sum() > 0


def test_mae_mistakes_fail_in_one_line(tmp_path):
    def check(*overrides):
        cfg = compose_train(["method=mae", "data=cifar10", *overrides], tmp_path)
        get_class(cfg.method._target_).check_config(cfg, world_size=1)

    with pytest.raises(UserError, match="not backbone=resnet18: use backbone=vit_tiny"):
        check("backbone=resnet18")
    with pytest.raises(UserError, match="mask_ratio=0.99 must leave at least one of the 64 patches visible"):
        check("method.mask_ratio=0.99")
    check("method.mask_ratio=0.98")  # int(64 x 0.02) = 1 visible patch: allowed


def test_mocov3_frozen_patch_projection_is_out_of_training(tmp_path):
    model = _model("mocov3", tmp_path, "backbone=vit_tiny", "method.freeze_patch_embed=true", *TINY_MOCOV3)
    frozen = list(model.backbone.patch_embed.parameters())
    assert frozen and not any(p.requires_grad for p in frozen)
    trained = {id(p) for g in parameter_groups(model, 0.1, True) for p in g["params"]}
    assert not trained & {id(p) for p in frozen}
    out = model.training_loss([torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)])
    out.loss.backward()
    assert all(p.grad is None for p in frozen) and model.projector[0].weight.grad is not None
    cfg = compose_train(["method=mocov3", "backbone=resnet18", "method.freeze_patch_embed=true"], tmp_path)
    with pytest.raises(UserError, match="backbone=resnet18 has none: set method.freeze_patch_embed=false"):
        get_class(cfg.method._target_).check_config(cfg, world_size=1)


# ------------------------------------------------------------------------------- through train.py
def test_mae_tiny_run_writes_results_with_finetune_first_and_a_reconstruction_grid(tmp_path):
    results = train(
        [
            "method=mae",
            "data=digits",
            *TINY_RUN,
            *TINY_MAE,
            "eval=finetune",
            "eval.finetune.epochs=1",
            "eval.finetune.layer_decay=0.75",
        ],
        tmp_path,
    )
    assert results["method"] == "mae" and results["backbone"] == "vit_tiny" and results["steps"] == 2
    assert results["primary_eval"] == "finetune" and "finetune_top1" in results
    assert [p.name for p in (tmp_path / "images").glob("epoch_*.png")] == ["epoch_000.png"]


@pytest.mark.parametrize("backbone", ["resnet18", "vit_tiny"])
def test_mocov3_tiny_run_writes_results(backbone, tmp_path):
    freeze = ["method.freeze_patch_embed=true"] if backbone == "vit_tiny" else []
    results = train(
        ["method=mocov3", f"backbone={backbone}", "data=digits", *TINY_RUN, *TINY_MOCOV3, *freeze], tmp_path
    )
    assert results["method"] == "mocov3" and results["backbone"] == backbone and results["steps"] == 2
    assert results["primary_eval"] == "linear"
    assert Path(results["checkpoint"]).is_file() and math.isfinite(results["metrics"]["train/loss"])


def test_dino_on_a_vit_tiny_run_writes_results(tmp_path):
    """Multi-crop on a ViT: the local views are smaller than data.resolution (the position table is interpolated)."""
    results = train(["method=dino", "backbone=vit_tiny", "data=digits", *TINY_RUN, *TINY_DINO], tmp_path)
    assert results["method"] == "dino" and results["backbone"] == "vit_tiny" and results["steps"] == 2
