"""Embed a labelled loader with a frozen backbone: the cached features kNN and the linear probe use."""

from __future__ import annotations

import contextlib

import torch
from hydra.utils import get_method
from rich.progress import track
from torch import nn

from selfsup.errors import UserError


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
    features = torch.cat(features)
    broken = int((~torch.isfinite(features)).any(dim=1).sum())
    if broken:  # else kNN scores garbage silently and the linear probe's line search overflows
        raise UserError(
            f"the backbone gives non-finite features (NaN/inf) for {broken} of {len(features)} images "
            f"({description}): its weights or BatchNorm statistics diverged; evaluate an earlier checkpoint "
            "or train again with a lower optimizer.lr"
        )
    return features, torch.cat(labels)


class EvaluationInput(nn.Module):
    """What a method's backbone is fed when it is embedded for evaluation (the kNN monitor, the online
    probe, the final evaluation and eval.py): `method.evaluation_input`, a dotted path to a function
    (images, mean, std) -> images, recorded with the config in every checkpoint (colorization: the
    lightness its backbone is trained on); null: the normalised images themselves."""

    def __init__(self, function: str | None, mean, std):
        super().__init__()
        self.function = get_method(function) if function else None
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    @classmethod
    def from_config(cls, method_cfg, data_cfg) -> "EvaluationInput":
        return cls(method_cfg.get("evaluation_input"), data_cfg.mean, data_cfg.std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images if self.function is None else self.function(images, self.mean, self.std)


class EvaluatedBackbone(nn.Module):
    """`backbone` fed through `evaluation_input`: what kNN, the linear probes and fine-tuning evaluate."""

    def __init__(self, backbone: nn.Module, evaluation_input: EvaluationInput):
        super().__init__()
        self.evaluation_input, self.backbone = evaluation_input, backbone
        self.output_dim = backbone.output_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.evaluation_input(images))


def unwrapped(model: nn.Module) -> nn.Module:
    """The backbone itself, for what reads its structure (a ViT's blocks for layer-wise LR decay)."""
    return model.backbone if isinstance(model, EvaluatedBackbone) else model
