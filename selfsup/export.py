"""The backbone alone, out of a training checkpoint, for use in other code (scripts/export.py, `make export`).

Writes `backbone.safetensors` and `backbone.pt` (the same state dict), which load strictly into the stock
model the backbone came from, with the classifier removed:
* resnet18/34/50: `torchvision.models.resnet50()` with `fc = nn.Identity()` (format=torchvision), or
  `timm.create_model("resnet50", num_classes=0)` (format=timm; timm's ResNet has the same keys). The
  project's ResNets are torchvision's, so no key needs mapping. A `backbone.cifar_stem=true` run has a
  3x3 stride-1 conv1 and no max-pool: the printed code gives the stock model the same, in one more statement;
* vit_tiny/small/base: timm's ViT of that size, built with the run's image and patch size and pooling;
* timm/<name>: `timm.create_model("<name>", num_classes=0)`.
Only the training module's `backbone.` prefix is dropped from the keys. A momentum method's checkpoint exports
the backbone its `method.eval_encoder` names (DINO: the teacher), or `encoder=online|momentum`; the file's
metadata records which, the backbone config and the training resolution (eval.py and train.py take the file as
weights=, and eval.py evaluates it at that resolution unless data.resolution says otherwise)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from omegaconf import OmegaConf

from selfsup.errors import UserError
from selfsup.models.backbones import POOLS, RESNETS, VITS, backbone_state, vit_patch_size

FORMATS = ("torchvision", "timm")
CIFAR_STEM = "model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False); model.maxpool = torch.nn.Identity()"
TIMM_VITS = {
    "vit_tiny": "vit_tiny_patch16_224",
    "vit_small": "vit_small_patch16_224",
    "vit_base": "vit_base_patch16_224",
}


def default_format(backbone_name: str) -> str:
    return "torchvision" if backbone_name in RESNETS else "timm"


def build_code(backbone_cfg, fmt: str) -> str:
    """The statement(s) that build the stock model matching `backbone_cfg`, classifier removed."""
    name = backbone_cfg.name
    if name in VITS:
        if fmt != "timm":
            raise UserError(f"backbone {name} is timm's VisionTransformer: export it with format=timm")
        patch = backbone_cfg.get("patch_size") or vit_patch_size(backbone_cfg.image_size)
        return (
            f'model = timm.create_model("{TIMM_VITS[name]}", img_size={backbone_cfg.image_size}, patch_size={patch}, '
            f'num_classes=0, global_pool="{POOLS[backbone_cfg.get("pool", "token")]}", fc_norm=False, '
            "dynamic_img_size=True)"
        )
    if name.startswith("timm/"):
        if fmt != "timm":
            raise UserError(f"backbone {name} is a timm model: export it with format=timm")
        return f'model = timm.create_model("{name.removeprefix("timm/")}", num_classes=0)'
    code = (
        f'model = timm.create_model("{name}", num_classes=0)'
        if fmt == "timm"
        else f"model = torchvision.models.{name}(); model.fc = torch.nn.Identity()"
    )
    return code + ("; " + CIFAR_STEM if backbone_cfg.get("cifar_stem") else "")


def loading_code(backbone_cfg, fmt: str, path: str | Path) -> list[str]:
    """The lines of Python that build the stock model and load the exported weights into it, strictly."""
    library = "timm" if fmt == "timm" else "torchvision"
    return [
        f"import safetensors.torch, torch, {library}",
        build_code(backbone_cfg, fmt),
        f'model.load_state_dict(safetensors.torch.load_file("{Path(path).resolve()}"))',
    ]


def writable_dir(path: Path) -> Path:
    """`path`, made a directory and written to once (a temporary file), so that an export that cannot
    be written fails before the checkpoint is read."""
    path = path.expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as err:
        raise UserError(
            f"cannot write the export to {path} ({err.strerror or err}): pass out=<a writable directory>"
        ) from None
    return path


def export_backbone(
    ckpt_path: str, fmt: str | None = None, out: str | None = None, encoder: str | None = None
) -> tuple[list[Path], list[str]]:
    """Writes <out or the checkpoint's dir>/backbone.{safetensors,pt}; returns their paths and the loading code.
    `encoder`: a momentum method's online or momentum backbone (None: its method.eval_encoder)."""
    from safetensors.torch import save_file

    from selfsup.run.checkpoint import read_checkpoint
    from selfsup.run.evaluated import trained_method

    out_dir = writable_dir(Path(out) if out else Path(ckpt_path).expanduser().parent)
    saved = read_checkpoint(ckpt_path)
    train_cfg = OmegaConf.create(saved.cfg)
    backbone_cfg, method = train_cfg.backbone, trained_method(train_cfg)
    encoder = encoder or (train_cfg.get("method") or {}).get("eval_encoder", "online")
    method.check_encoder(encoder)
    fmt = fmt or default_format(backbone_cfg.name)
    if fmt not in FORMATS:
        raise UserError(f"format={fmt} is not one of {', '.join(FORMATS)}")
    code_path = out_dir / "backbone.safetensors"
    code = loading_code(backbone_cfg, fmt, code_path)  # (refuses a format the backbone has no stock model in)
    # (contiguous: channels_last conv weights are strided views, which safetensors refuses)
    prefix = method.encoder_prefix(encoder)
    weights = {k: v.detach().cpu().contiguous() for k, v in backbone_state(saved.state_dict, prefix).items()}
    if not weights:
        raise UserError(f"{saved.path} holds no {encoder} backbone weights (no '{prefix}*' keys)")
    # backbone_config: what eval.py / train.py weights= build to load the file into
    metadata = {
        "backbone": backbone_cfg.name,
        "format": fmt,
        "checkpoint": str(saved.path.resolve()),
        "encoder": encoder,
        "build": code[1],
        "resolution": str(OmegaConf.select(train_cfg, "data.resolution")),
        "backbone_config": json.dumps(OmegaConf.to_container(backbone_cfg, resolve=True)),
    }
    save_file(weights, str(code_path), metadata=metadata)
    torch.save(weights, code_path.with_suffix(".pt"))
    return [code_path, code_path.with_suffix(".pt")], code
