"""The backbone alone, out of a training checkpoint, for use in other code (scripts/export.py, `make export`).

Writes `backbone.safetensors` and `backbone.pt` (the same state dict), which load strictly into the stock
model the backbone came from, with the classifier removed:
* resnet18/34/50: `torchvision.models.resnet50()` with `fc = nn.Identity()` (format=torchvision), or
  `timm.create_model("resnet50", num_classes=0)` (format=timm; timm's ResNet has the same keys). The
  project's ResNets are torchvision's, so no key needs mapping. A `backbone.cifar_stem=true` run has a
  3x3 stride-1 conv1 and no max-pool: the printed code gives the stock model the same, in one more statement;
* vit_tiny/small/base: timm's ViT of that size, built with the run's image and patch size and pooling;
* timm/<name>: `timm.create_model("<name>", num_classes=0)`.
Only the training module's `backbone.` prefix is dropped from the keys."""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from selfsup.errors import UserError
from selfsup.models.backbones import POOLS, RESNETS, VITS, backbone_state, vit_patch_size

FORMATS = ("torchvision", "timm")
CIFAR_STEM = "model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False); model.maxpool = torch.nn.Identity()"
TIMM_VITS = {"vit_tiny": "vit_tiny_patch16_224", "vit_small": "vit_small_patch16_224", "vit_base": "vit_base_patch16_224"}


def default_format(backbone_name: str) -> str:
    return "torchvision" if backbone_name in RESNETS else "timm"


def build_code(backbone_cfg, fmt: str) -> str:
    """The statement(s) that build the stock model matching `backbone_cfg`, classifier removed."""
    name = backbone_cfg.name
    if name in VITS:
        if fmt != "timm":
            raise UserError(f"backbone {name} is timm's VisionTransformer: export it with format=timm")
        patch = backbone_cfg.get("patch_size") or vit_patch_size(backbone_cfg.image_size)
        return (f'model = timm.create_model("{TIMM_VITS[name]}", img_size={backbone_cfg.image_size}, patch_size={patch}, '
                f'num_classes=0, global_pool="{POOLS[backbone_cfg.get("pool", "token")]}", fc_norm=False, '
                "dynamic_img_size=True)")
    if name.startswith("timm/"):
        if fmt != "timm":
            raise UserError(f"backbone {name} is a timm model: export it with format=timm")
        return f'model = timm.create_model("{name.removeprefix("timm/")}", num_classes=0)'
    code = (f'model = timm.create_model("{name}", num_classes=0)' if fmt == "timm"
            else f"model = torchvision.models.{name}(); model.fc = torch.nn.Identity()")
    return code + ("; " + CIFAR_STEM if backbone_cfg.get("cifar_stem") else "")


def loading_code(backbone_cfg, fmt: str, path: str | Path) -> list[str]:
    """The lines of Python that build the stock model and load the exported weights into it, strictly."""
    library = "timm" if fmt == "timm" else "torchvision"
    return [f"import safetensors.torch, torch, {library}", build_code(backbone_cfg, fmt),
            f'model.load_state_dict(safetensors.torch.load_file("{Path(path).resolve()}"))']


def export_backbone(ckpt_path: str, fmt: str | None = None, out: str | None = None) -> tuple[list[Path], list[str]]:
    """Writes <out or the checkpoint's dir>/backbone.{safetensors,pt}; returns their paths and the loading code."""
    from safetensors.torch import save_file

    from selfsup.run.checkpoint import read_checkpoint

    saved = read_checkpoint(ckpt_path)
    backbone_cfg = OmegaConf.create(saved.cfg).backbone
    fmt = fmt or default_format(backbone_cfg.name)
    if fmt not in FORMATS:
        raise UserError(f"format={fmt} is not one of {', '.join(FORMATS)}")
    code_path = Path(out or saved.path.parent) / "backbone.safetensors"
    code = loading_code(backbone_cfg, fmt, code_path)  # (refuses a format the backbone has no stock model in)
    # (contiguous: channels_last conv weights are strided views, which safetensors refuses)
    weights = {k: v.detach().cpu().contiguous() for k, v in backbone_state(saved.state_dict).items()}
    if not weights:
        raise UserError(f"{saved.path} holds no backbone weights (no 'backbone.*' keys)")
    code_path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"backbone": backbone_cfg.name, "format": fmt, "checkpoint": str(saved.path.resolve()),
                "build": code[1]}
    save_file(weights, str(code_path), metadata=metadata)
    torch.save(weights, code_path.with_suffix(".pt"))
    return [code_path, code_path.with_suffix(".pt")], code
