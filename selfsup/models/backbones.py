"""Backbones built from config: torchvision ResNets (optionally with a CIFAR stem), Vision
Transformers (ViT-Tiny/Small/Base) and any timm model by name (`timm/<model>`). Every backbone maps
images to a flat feature vector and exposes its width as `output_dim`.

ViTs are timm's `VisionTransformer` (timm is pinned in requirements.txt), not torchvision's, because:
- MAE, MoCo v3 and DINO were written on timm's ViT (`patch_embed`, `pos_embed`, `cls_token`, `blocks`,
  `norm`), so their encoders can be followed line by line: MAE runs the blocks on the visible tokens
  only, MoCo v3 freezes `patch_embed`; torchvision's ViT hides the token sequence inside one forward;
- timm's ViT takes any patch size, pooling (CLS or mean) and image size, and lists its no-decay
  parameters (`no_weight_decay()`), which `selfsup.optim.parameter_groups` honours;
- it runs attention through PyTorch's fused scaled-dot-product kernel under bf16.
Weights are always randomly initialised (no network at run time, and pretraining is the point).
"""

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
# (width, depth, heads): DeiT's Tiny/Small and ViT's Base (Touvron et al. 2021, Table 1; Dosovitskiy et al. 2021)
VITS = {
    "vit_tiny": (192, 12, 3),
    "vit_small": (384, 12, 6),
    "vit_base": (768, 12, 12),
}
POOLS = {"token": "token", "mean": "avg"}  # backbone.pool -> timm's global_pool
POS_EMBEDS = ("learn", "sincos")


class SmallMapSafeConv2d(nn.Conv2d):
    """A strided Conv2d that computes in fp32 where PyTorch's CPU bf16 kernel returns a wrong weight
    gradient: a strided 3x3 convolution of a 1x1 map under CPU autocast gives NaN or ~1e30 in dW
    (torch 2.14.1, oneDNN, measured in docs/cpu_runs.md; the output and input gradients are right).
    That is ResNet layer4's first convolution on a 16-px view with the standard stem (DINO's local
    crops at 32 px). Anywhere else, and on GPUs, it is a plain Conv2d; its weights are a Conv2d's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.shape[-2:] == (1, 1) and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float())
        return super().forward(x)


def guard_small_map_convs(backbone: nn.Module) -> None:
    """Every strided convolution with a kernel wider than 1 becomes a SmallMapSafeConv2d (same weights)."""
    for module in backbone.modules():
        if type(module) is nn.Conv2d and max(module.stride) > 1 and max(module.kernel_size) > 1:
            module.__class__ = SmallMapSafeConv2d


def build_backbone(
    name: str,
    cifar_stem: bool = False,
    zero_init_residual: bool = False,
    channels_last: bool = True,
    image_size: int | None = None,
    patch_size: int | None = None,
    pool: str = "token",
    pos_embed: str = "learn",
    drop_path_rate: float = 0.0,
) -> nn.Module:
    if name in VITS:
        if cifar_stem or channels_last:
            raise UserError(
                f"backbone={name} is a ViT: backbone.cifar_stem and backbone.channels_last apply to "
                "ResNets only, set them to false (the patch size is backbone.patch_size)"
            )
        return build_vit(name, image_size, patch_size, pool, pos_embed, drop_path_rate)
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
        guard_small_map_convs(backbone)
    else:
        raise UserError(
            f"unknown backbone '{name}': choose one of {', '.join([*RESNETS, *VITS])} or 'timm/<model name>'"
        )
    if channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    return backbone


def backbone_state(state_dict: dict, prefix: str = "backbone.") -> dict:
    """The backbone's own weights in a training module's state dict, keyed as the bare backbone has them
    (`prefix`: a momentum method's EMA backbone is `<target>.0.`, see SSLMethod.encoder_prefix)."""
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


DROP_PATH_SLOTS = ("drop_path", "drop_path1", "drop_path2")  # timm's names for a residual branch's stochastic depth


def set_drop_path(backbone: nn.Module, rate: float) -> None:
    """Stochastic depth on a built timm backbone (fine-tuning: MAE 0.1 for ViT-B), by timm's rule: the
    residual blocks in order, the first at 0 and the last at `rate`, linearly between (a ViT's blocks,
    a timm ResNet's bottlenecks, ConvNeXt's blocks: the modules holding `drop_path*` slots)."""
    from timm.layers import DropPath

    blocks = [m for m in backbone.modules() if any(slot in vars(m) or slot in m._modules for slot in DROP_PATH_SLOTS)]
    if not blocks:
        raise UserError(
            f"eval.finetune.drop_path={rate} needs a timm backbone with residual drop-path slots "
            "(backbone=vit_tiny|vit_small|vit_base or timm/<model>): set eval.finetune.drop_path=0"
        )
    for i, block in enumerate(blocks):
        block_rate = rate * i / max(1, len(blocks) - 1)
        for slot in DROP_PATH_SLOTS:
            if slot in vars(block) or slot in block._modules:
                setattr(block, slot, DropPath(block_rate) if block_rate > 0 else nn.Identity())


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


def vit_patch_size(resolution: int) -> int:
    """The patch side when `backbone.patch_size` is null: 16 at ImageNet sizes (14 x 14 tokens at
    224 px, as in ViT, MAE, MoCo v3, DINO), 8 at STL-10 sizes (12 x 12 at 96 px), 4 at CIFAR sizes
    (8 x 8 at 32 px, the CIFAR ViTs of solo-learn and MAE reimplementations)."""
    if resolution >= 160:
        return 16
    return 8 if resolution >= 80 else 4


def build_vit(
    name: str,
    image_size: int | None,
    patch_size: int | None,
    pool: str = "token",
    pos_embed: str = "learn",
    drop_path_rate: float = 0.0,
) -> nn.Module:
    """A randomly initialised timm ViT without classifier; its forward returns the final-norm CLS
    token (pool=token) or the mean of the patch tokens (pool=mean), `output_dim` wide.

    pos_embed=sincos: the fixed 2-D sine-cosine table of MAE and MoCo v3 (not trained; zeros at the
    CLS position) instead of a learned one. Other input sizes than `image_size` (a transfer
    evaluation) interpolate the position table (timm's dynamic_img_size)."""
    from timm.layers import build_sincos2d_pos_embed
    from timm.models.vision_transformer import VisionTransformer

    if image_size is None:
        raise UserError(f"backbone={name} needs the image size: set data.resolution")
    patch_size = patch_size or vit_patch_size(image_size)
    if image_size % patch_size:
        raise UserError(
            f"backbone.patch_size={patch_size} does not divide data.resolution={image_size}: "
            f"use a divisor of {image_size} (null picks {vit_patch_size(image_size)})"
        )
    if pool not in POOLS:
        raise UserError(f"backbone.pool={pool} is not a pooling: use {' | '.join(POOLS)}")
    if pos_embed not in POS_EMBEDS:
        raise UserError(f"backbone.pos_embed={pos_embed} is not a position embedding: use {' | '.join(POS_EMBEDS)}")
    width, depth, heads = VITS[name]
    # fc_norm=False keeps the final LayerNorm before pooling whatever the pooling: both poolings then
    # have the same parameters, so one checkpoint serves CLS (linear probe) and mean (fine-tuning).
    vit = VisionTransformer(
        img_size=image_size,
        patch_size=patch_size,
        num_classes=0,
        embed_dim=width,
        depth=depth,
        num_heads=heads,
        global_pool=POOLS[pool],
        fc_norm=False,
        dynamic_img_size=True,
        drop_path_rate=drop_path_rate,
    )
    if pos_embed == "sincos":
        grid = vit.patch_embed.grid_size
        table = build_sincos2d_pos_embed(list(grid), width)
        with torch.no_grad():
            vit.pos_embed.copy_(torch.cat([torch.zeros(1, width), table])[None])
        vit.pos_embed.requires_grad_(False)
    vit.output_dim = width
    vit.patch_size = patch_size
    return vit
