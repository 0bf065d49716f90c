"""Fine-tuning evaluation: the whole pretrained network plus a new linear classifier, trained end to
end on the labelled split and scored once on the evaluation split. Every piece of the recipe is timm's,
so one code path serves the light default (eval=finetune: crop + flip, SGD with Nesterov, cosine) and
MAE's ViT recipe (eval=finetune_vit: RandAugment, random erasing, mixup / cutmix, label smoothing, drop
path, AdamW, layer-wise LR decay, warm-up + cosine):
- the training images: `timm.data.create_transform`;
- mixup, cutmix and label smoothing: `timm.data.Mixup` (soft targets);
- layer-wise LR decay and no weight decay on biases, norms, position table and CLS token:
  `timm.optim.param_groups_layer_decay`, for any backbone with timm's `group_matcher` (its ViTs and
  every `timm/<model>`);
- drop path: `selfsup.models.backbones.set_drop_path`.

The backbone is copied first, so the pretrained weights (and a kNN or linear score computed on
them afterwards) are left untouched."""

from __future__ import annotations

import contextlib
import copy
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from selfsup.errors import UserError
from selfsup.eval.features import unwrapped
from selfsup.models.backbones import set_drop_path
from selfsup.optim import warmup_cosine


def train_transform(cfg, data_cfg):
    """The fine-tuning images: random resized crop, flip, RandAugment (`cfg.randaugment`), then
    normalisation and random erasing of per-pixel noise (MAE's and DeiT's `--reprob`, `re_mode=pixel`)."""
    from timm.data import create_transform

    return create_transform(
        data_cfg.resolution,
        is_training=True,
        scale=tuple(cfg.crop_scale),
        hflip=cfg.flip_p,
        color_jitter=None,
        auto_augment=cfg.randaugment,
        interpolation=str(cfg.interpolation),
        mean=tuple(float(m) for m in data_cfg.mean),
        std=tuple(float(s) for s in data_cfg.std),
        re_prob=cfg.random_erasing,
        re_mode="pixel",
        re_count=1,
    )


def mixing(cfg, num_classes: int):
    """timm's Mixup over each batch and its mirror (one of mixup / cutmix per batch, 50/50 when both are
    on), with its soft, label-smoothed targets; None when both are off."""
    if cfg.mixup == 0 and cfg.cutmix == 0:
        return None
    from timm.data import Mixup

    return Mixup(
        mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.label_smoothing, num_classes=num_classes
    )


class ClassifierLayers(nn.Module):
    """The backbone's parameters under their own names and the head's under `finetune_head.`, with the backbone's
    `group_matcher` and `no_weight_decay`: timm then groups the classifier as it groups its own models,
    the head an unmatched last layer."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        for name, param in backbone.named_parameters(recurse=False):
            self.register_parameter(name, param)
        for name, child in backbone.named_children():
            self.add_module(name, child)
        self.finetune_head = head  # a name no timm matcher knows (a ConvNeXt's `head` holds its final norm)
        for method in ("group_matcher", "no_weight_decay"):
            if hasattr(backbone, method):
                setattr(self, method, getattr(backbone, method))


def parameter_groups(backbone: nn.Module, head: nn.Module, cfg) -> list[dict]:
    """timm's parameter groups of backbone + head, each with its "lr_scale" (the backbone's times
    `backbone_lr_factor`). With `layer_decay` < 1, `param_groups_layer_decay` on timm's layers: the
    embeddings are layer 0, a ViT's block i of L is layer i (the final norm joins block L), the head is
    layer L + 1, and layer l is scaled by decay ** (L + 1 - l), as MAE's fine-tuning. No weight decay
    on 1-D parameters and on what the backbone lists in `no_weight_decay()`. (The options' ranges are
    checked before pretraining: selfsup.checks.config.check_finetune_options.)"""
    from timm.optim import param_groups_layer_decay, param_groups_weight_decay

    classifier = ClassifierLayers(backbone, head)
    exempt = tuple(classifier.no_weight_decay()) if hasattr(classifier, "no_weight_decay") else ()
    if cfg.layer_decay == 1.0:
        groups = param_groups_weight_decay(classifier, cfg.weight_decay, no_weight_decay_list=exempt)
    elif not hasattr(classifier, "group_matcher"):
        raise UserError(
            f"eval.finetune.layer_decay={cfg.layer_decay} needs a backbone timm can split into layers "
            "(backbone=vit_tiny|vit_small|vit_base or timm/<model>): set eval.finetune.layer_decay=1.0"
        )
    else:
        groups = param_groups_layer_decay(
            classifier, cfg.weight_decay, no_weight_decay_list=exempt, layer_decay=cfg.layer_decay
        )
    head_params = {id(p) for p in head.parameters()}
    split = []
    for group in groups:
        for in_head, factor in ((False, cfg.backbone_lr_factor), (True, 1.0)):
            params = [p for p in group["params"] if (id(p) in head_params) == in_head]
            if params:
                split.append({**group, "params": params, "lr_scale": group.get("lr_scale", 1.0) * factor})
    return split


def build_optimizer(groups: list[dict], cfg, lr: float) -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW over `groups`, each at `lr` x its "lr_scale"."""
    groups = [{**{k: v for k, v in g.items() if k != "lr_scale"}, "lr": lr * g["lr_scale"]} for g in groups]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas))
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)


def finetune(backbone: nn.Module, datamodule, cfg, device, bf16: bool = False, seed: int = 0, labelled=None) -> dict:
    """`cfg`: the `eval.finetune` node (selfsup.config.evaluation.FinetuneConfig); `labelled`: the images
    to train on (default: the labelled split; eval.label_fraction: a class-balanced part of it).
    Returns finetune_top1 and its settings."""
    from selfsup.data.datamodule import TransformedDataset

    data_cfg = datamodule.cfg
    torch.manual_seed(seed)
    model = copy.deepcopy(backbone).to(device)
    if cfg.drop_path > 0:
        set_drop_path(unwrapped(model), cfg.drop_path)
    head = nn.Linear(model.output_dim, data_cfg.num_classes).to(device)
    batch_size = cfg.batch_size or data_cfg.batch_size
    train_set = TransformedDataset(
        datamodule.labelled if labelled is None else labelled, train_transform(cfg, data_cfg)
    )
    mix = mixing(cfg, data_cfg.num_classes)
    if mix is not None and min(batch_size, len(train_set)) % 2:
        raise UserError(
            f"eval.finetune.mixup/cutmix mix each image with its mirror in the batch: the batch of "
            f"{min(batch_size, len(train_set))} images must be even (eval.finetune.batch_size)"
        )
    train_loader = DataLoader(
        train_set,
        batch_size=batch_size,
        shuffle=True,
        drop_last=len(train_set) > batch_size,
        num_workers=datamodule.num_workers,
        generator=torch.Generator().manual_seed(seed),
    )
    _, val_loader = datamodule.evaluation_loaders()

    # LR per 256 images (MAE's blr), like the pretraining optimizer.
    lr = cfg.lr * batch_size / 256
    model.requires_grad_(True)  # what pretraining held fixed (MoCo v3's patch projection) is fine-tuned too
    optimizer = build_optimizer(parameter_groups(unwrapped(model), head, cfg), cfg, lr)
    total_steps = max(1, cfg.epochs * len(train_loader))
    warmup_steps = int(cfg.warmup_epochs * len(train_loader))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, total_steps, warmup_steps, 0.0, cfg.min_lr / lr)
    )
    autocast = (
        torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
        if bf16
        else contextlib.nullcontext()
    )

    start = time.perf_counter()
    model.train()
    head.train()
    for _ in range(cfg.epochs):
        for images, labels in train_loader:
            images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            labels = torch.as_tensor(labels, device=device)
            if mix is None:
                targets = labels
            else:  # soft targets, already label-smoothed
                images, targets = mix(images, labels)
            with autocast:
                logits = head(model(images))
            loss = F.cross_entropy(
                logits.float(), targets, label_smoothing=0.0 if mix is not None else cfg.label_smoothing
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()

    model.eval()
    head.eval()
    correct = total = 0
    with torch.no_grad(), autocast:
        for images, labels in val_loader:
            images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            labels = torch.as_tensor(labels, device=device)
            correct += (head(model(images)).argmax(1) == labels).sum().item()
            total += len(labels)
    return {
        "finetune_top1": correct / max(1, total),
        "finetune_epochs": cfg.epochs,
        "finetune_seconds": round(time.perf_counter() - start, 2),
    }
