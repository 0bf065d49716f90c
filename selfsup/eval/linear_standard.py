"""The standard linear evaluation protocol of the SSL papers (SimCLR, BYOL, MoCo; solo-learn, VISSL): a
linear classifier trained with SGD and a cosine LR on the frozen backbone's features of augmented
images (random resized crop + flip, drawn afresh every epoch; ~90-100 epochs in the papers), scored
top-1 and top-5 on centre crops of the evaluation split. The backbone runs in eval mode (BatchNorm
statistics frozen) every epoch, so this costs `epochs` forward passes over the labelled split; the fast
probe (eval.linear) fits cached augmentation-free features instead and is a different protocol."""

from __future__ import annotations

import contextlib
import math
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from selfsup.data.transforms import supervised_train_transform
from selfsup.eval.accuracy import topk_accuracy

PROTOCOL = "standard"  # results.json linear_protocol: SGD on augmented frozen features, centre-crop test


def linear_standard(
    backbone: nn.Module, datamodule, cfg, device, bf16: bool = False, seed: int = 0, labelled=None
) -> dict:
    """`cfg`: the `eval.linear_standard` node (epochs, lr per 256 images, momentum, weight_decay,
    batch_size, crop_scale, flip_p); `labelled`: the images to train on (default: the labelled split)."""
    from selfsup.data.datamodule import TransformedDataset

    data_cfg = datamodule.cfg
    torch.manual_seed(seed)
    head = nn.Linear(backbone.output_dim, data_cfg.num_classes).to(device)
    batch_size = cfg.batch_size or data_cfg.batch_size
    train_set = TransformedDataset(
        datamodule.labelled if labelled is None else labelled,
        supervised_train_transform(data_cfg.resolution, data_cfg.mean, data_cfg.std, cfg.crop_scale, cfg.flip_p),
    )
    train_loader = DataLoader(
        train_set,
        batch_size=batch_size,
        shuffle=True,
        num_workers=datamodule.num_workers,
        generator=torch.Generator().manual_seed(seed),
    )
    _, val_loader = datamodule.evaluation_loaders()
    optimizer = torch.optim.SGD(
        head.parameters(), lr=cfg.lr * batch_size / 256, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    total_steps = max(1, cfg.epochs * len(train_loader))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    )
    autocast = (
        torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
        if bf16
        else contextlib.nullcontext()
    )

    def features(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), autocast:
            images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            return backbone(images).float()

    was_training = backbone.training
    backbone.eval()
    start = time.perf_counter()
    head.train()
    for _ in range(cfg.epochs):
        for images, labels in train_loader:
            loss = F.cross_entropy(head(features(images)), torch.as_tensor(labels, device=device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    head.eval()
    with torch.no_grad():
        scores, targets = zip(
            *((head(features(images)), torch.as_tensor(labels, device=device)) for images, labels in val_loader)
        )
    backbone.train(was_training)
    scores, targets = torch.cat(scores), torch.cat(targets)
    return {
        "linear_top1": topk_accuracy(scores, targets, 1),
        "linear_top5": topk_accuracy(scores, targets, 5),
        "linear_protocol": PROTOCOL,
        "linear_epochs": cfg.epochs,
        "linear_seconds": round(time.perf_counter() - start, 2),
    }
