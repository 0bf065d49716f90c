"""What eval.py scores, and on which data: a checkpoint's backbone (its online or momentum encoder) or
weights from elsewhere (`weights=`: a state dict file, a torchvision or timm name, random init)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from torch import nn

from selfsup.checks import eval_data
from selfsup.data.layout import UNLABELLED_DATASETS
from selfsup.errors import UserError
from selfsup.methods.base import SSLMethod
from selfsup.models.backbones import RESNETS, VITS, backbone_state, build_backbone
from selfsup.models.weights import Weights, check_backbone, find_weights, load_weights, read_state
from selfsup.run.checkpoint import read_checkpoint


@dataclass
class Source:
    """A backbone to evaluate, before it is built (its config may need the data's resolution)."""

    record: dict  # results.json: where the backbone comes from
    backbone_cfg: Optional[DictConfig]  # None: backbone= (eval.py's), resolved against the data
    evaluation_input: Optional[str]  # the method's evaluation input (colorization: the L channel)
    pretrain_cfg: Optional[DictConfig]  # a checkpoint's training config; None for weights=
    state: Optional[dict] = None  # a checkpoint's backbone weights
    weights: Optional[Weights] = None


def trained_method(train_cfg: DictConfig) -> type[SSLMethod]:
    """The method class a checkpoint's config names (its encoders and where their backbones are saved)."""
    target = (train_cfg.get("method") or {}).get("_target_")
    return get_class(target) if target else SSLMethod


def evaluation_source(cfg: DictConfig) -> Source:
    """eval.py's ckpt_path= or weights= (exactly one), located and checked; nothing is built yet."""
    if bool(cfg.get("ckpt_path")) == bool(cfg.get("weights")):
        raise UserError(
            "eval.py scores either a checkpoint of this project (ckpt_path=<run>/checkpoints/last.ckpt) or "
            "other weights (weights=<file>|resnet50.IMAGENET1K_V2|timm/<model>.<tag>|random), "
            + ("not both" if cfg.get("ckpt_path") else "and was given neither")
        )
    if cfg.get("weights"):
        if cfg.get("encoder") is not None:
            raise UserError(
                f"encoder={cfg.encoder} picks a checkpoint's online or momentum encoder; weights= has one backbone"
            )
        weights = find_weights(cfg.weights)
        origin = {**weights.record(), **({"seed": cfg.seed} if weights.kind == "random" else {})}
        record = {"weights": origin, "method": None, "pretrain_data": None}
        return Source(record, None, None, None, weights=weights)
    saved = read_checkpoint(cfg.ckpt_path)
    train_cfg = OmegaConf.create(saved.cfg)
    method = trained_method(train_cfg)
    encoder = cfg.get("encoder") or (train_cfg.get("method") or {}).get("eval_encoder", "online")
    method.check_encoder(encoder)
    state = backbone_state(saved.state_dict, method.encoder_prefix(encoder))
    if not state:
        raise UserError(f"{saved.path} holds no {encoder} backbone weights ('{method.encoder_prefix(encoder)}*' keys)")
    record = {
        "checkpoint": str(cfg.ckpt_path),
        "encoder": encoder,
        "method": train_cfg.method.name,
        "pretrain_data": train_cfg.data.name,
    }
    return Source(record, train_cfg.backbone, train_cfg.method.get("evaluation_input"), train_cfg, state=state)


def evaluation_data(cfg: DictConfig, source: Source) -> DictConfig:
    """The labelled data to score on: data= (transfer), else eval.data, else the checkpoint's eval.data,
    else the checkpoint's own pretraining data; its resolution, when unset, the one the backbone was trained
    at (the checkpoint's, or an export's), else the images' own."""
    data = cfg.get("data") or eval_data(cfg)
    pretrain = source.pretrain_cfg
    if data is None and pretrain is not None:
        data = eval_data(pretrain) or pretrain.data
    if data is None:
        raise UserError(
            "weights= come without data to score on: pass data=<...> (e.g. data=folder data.root=<labelled "
            "folder>) or eval.data=<a labelled folder or dataset name>"
        )
    if data.name in UNLABELLED_DATASETS:
        raise UserError(
            f"{data.root} (data={data.name}) has no labels to score on: pass eval.data=<a labelled folder "
            "or dataset name, e.g. cifar10> or data=<labelled data>"
        )
    trained_at = pretrain.data.resolution if pretrain is not None else source.weights.resolution
    if data.resolution is None and trained_at is not None:
        data = OmegaConf.merge(data, {"resolution": trained_at})
    return data


def build_evaluated(cfg: DictConfig, source: Source, data_cfg: DictConfig) -> nn.Module:
    """The backbone of `source`, built and loaded; `data_cfg` complete (its resolution known)."""
    if source.state is not None:
        backbone = build_backbone(**source.backbone_cfg)
        backbone.load_state_dict(source.state)
        return backbone
    weights = source.weights
    chosen = cfg.get("backbone")
    if chosen is not None:  # backbone= (eval.py): resolved against the data (image_size, the stem by resolution)
        chosen = OmegaConf.create({"data": data_cfg, "backbone": OmegaConf.to_container(chosen)})
        chosen = OmegaConf.to_container(chosen, resolve=True)["backbone"]
    backbone_cfg = backbone_for(weights, chosen)
    source.record["backbone"] = backbone_cfg["name"]
    if weights.kind == "random":
        torch.manual_seed(cfg.seed)
    backbone = build_backbone(**backbone_cfg)
    load_weights(backbone, weights)
    return backbone


def backbone_for(weights: Weights, chosen: Optional[dict]) -> dict:
    """The backbone config `weights` load into: `chosen` (backbone=, resolved), which must be the weights'
    own where they name it (a ResNet's stem follows a state dict's conv1); else the config the file records
    (export.py) or the architecture the weight name names."""
    if chosen is not None:
        check_backbone(weights, chosen["name"])
        config = {**chosen, "cifar_stem": False} if weights.kind in ("torchvision", "timm") else chosen  # ImageNet stem
    elif weights.backbone_config or weights.backbone:
        config = weights.backbone_config or {"name": weights.backbone, "cifar_stem": False}
    else:
        what = "need a backbone to initialise" if weights.kind == "random" else "do not say which backbone they fit"
        raise UserError(
            f"weights={weights.spec} {what}: pass backbone=<"
            f"{'|'.join([*RESNETS, *VITS])}> (for timm models: backbone.name=timm/<model>)"
        )
    if weights.kind == "file" and config["name"] in RESNETS:  # the stem the state dict has: 3x3 conv1 = CIFAR's
        conv1 = read_state(weights).get("conv1.weight")
        config = {**config, "cifar_stem": conv1 is not None and conv1.shape[-1] == 3}
    return config
