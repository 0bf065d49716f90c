"""Fine-tuning evaluation: the whole pretrained network plus a new linear classifier, trained
end to end on the labelled split with standard supervised augmentation (random resized crop and
horizontal flip), the backbone at a lower LR than the head (`backbone_lr_factor`), SGD with
Nesterov momentum and a cosine schedule for a few epochs; scored once on the evaluation split.

The backbone is copied first, so the pretrained weights (and a kNN or linear score computed on
them afterwards) are left untouched."""
from __future__ import annotations

import contextlib
import copy
import math
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms as T

from selfsup.eval.features import unwrapped
from selfsup.optim import layer_decay_groups


def supervised_train_transform(resolution: int, mean, std, crop_scale, flip_p: float) -> T.Compose:
    """Random resized crop + flip: the augmentation of fine-tuning and of the standard linear protocol."""
    return T.Compose([
        T.RandomResizedCrop(resolution, scale=tuple(crop_scale), antialias=True),
        T.RandomHorizontalFlip(flip_p),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


def finetune(backbone: nn.Module, datamodule, cfg, device, bf16: bool = False, seed: int = 0,
             labelled=None) -> dict:
    """`cfg`: the `eval.finetune` node (epochs, lr, backbone_lr_factor, layer_decay, weight_decay, momentum,
    batch_size, crop_scale, flip_p, label_smoothing); `labelled`: the images to train on (default: the
    labelled split; eval.label_fraction: a class-balanced part of it). Returns finetune_top1 and its settings."""
    from selfsup.data.datamodule import TransformedDataset

    data_cfg = datamodule.cfg
    torch.manual_seed(seed)
    model = copy.deepcopy(backbone).to(device)
    head = nn.Linear(model.output_dim, data_cfg.num_classes).to(device)
    batch_size = cfg.batch_size or data_cfg.batch_size
    train_set = TransformedDataset(
        datamodule.labelled if labelled is None else labelled,
        supervised_train_transform(data_cfg.resolution, data_cfg.mean, data_cfg.std, cfg.crop_scale, cfg.flip_p),
    )
    train_loader = DataLoader(
        train_set, batch_size=batch_size, shuffle=True, drop_last=len(train_set) > batch_size,
        num_workers=datamodule.num_workers, generator=torch.Generator().manual_seed(seed),
    )
    _, val_loader = datamodule.evaluation_loaders()

    # LR per 256 images, like the pretraining optimizer; the backbone gets a fraction of it, decayed
    # layer by layer towards the input with eval.finetune.layer_decay < 1 (ViTs).
    lr = cfg.lr * batch_size / 256
    model.requires_grad_(True)  # what pretraining held fixed (MoCo v3's patch projection) is fine-tuned too
    optimizer = torch.optim.SGD(
        [*({"params": params, "lr": lr * cfg.backbone_lr_factor * scale}
           for scale, params in layer_decay_groups(unwrapped(model), cfg.layer_decay)),
         {"params": head.parameters(), "lr": lr}],
        lr=lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0, weight_decay=cfg.weight_decay,
    )
    total_steps = max(1, cfg.epochs * len(train_loader))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    )
    autocast = (
        torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16) if bf16
        else contextlib.nullcontext()
    )

    start = time.perf_counter()
    model.train()
    head.train()
    for _ in range(cfg.epochs):
        for images, labels in train_loader:
            images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            labels = torch.as_tensor(labels, device=device)
            with autocast:
                logits = head(model(images))
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=cfg.label_smoothing)
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
