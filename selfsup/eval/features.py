"""Embed a labelled loader with a frozen backbone: the cached features kNN and the linear probe use."""
from __future__ import annotations

import contextlib

import torch
from rich.progress import track


@torch.no_grad()
def extract_features(backbone, loader, device, bf16: bool = False, description: str = "features"):
    was_training = backbone.training
    backbone.eval()
    autocast = (
        torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
        if bf16
        else contextlib.nullcontext()
    )
    features, labels = [], []
    with autocast:
        for images, targets in track(loader, description=description, transient=True):
            images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            features.append(backbone(images).float())
            labels.append(torch.as_tensor(targets, device=device))
    backbone.train(was_training)
    return torch.cat(features), torch.cat(labels)
