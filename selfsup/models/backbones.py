"""Backbones built from config: torchvision ResNets (optionally with a CIFAR stem) or any timm
model by name (`timm/<model>`). Every backbone maps images to a flat feature vector and exposes
its width as `output_dim`."""
from __future__ import annotations

import torch
import torchvision
from torch import nn

from selfsup.errors import UserError

RESNETS = {
    "resnet18": torchvision.models.resnet18,
    "resnet34": torchvision.models.resnet34,
    "resnet50": torchvision.models.resnet50,
}


def build_backbone(
    name: str, cifar_stem: bool = False, zero_init_residual: bool = False, channels_last: bool = True
) -> nn.Module:
    if name.startswith("timm/"):
        backbone = _timm_backbone(name.removeprefix("timm/"))
    elif name in RESNETS:
        backbone = RESNETS[name](zero_init_residual=zero_init_residual)
        backbone.output_dim = backbone.fc.in_features
        backbone.fc = nn.Identity()
        if cifar_stem:
            # Small images lose too much to the 7x7/2 conv + max-pool (SimCLR App. B.9).
            backbone.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            backbone.maxpool = nn.Identity()
    else:
        raise UserError(
            f"unknown backbone '{name}': choose one of {', '.join(RESNETS)} or 'timm/<model name>'"
        )
    if channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    return backbone


def _timm_backbone(model_name: str) -> nn.Module:
    try:
        import timm
    except ImportError as err:
        raise UserError(f"backbone 'timm/{model_name}' needs timm: pip install timm") from err
    if model_name not in timm.list_models():
        raise UserError(f"timm has no model '{model_name}' (see timm.list_models())")
    backbone = timm.create_model(model_name, pretrained=False, num_classes=0)
    backbone.output_dim = backbone.num_features
    return backbone
