"""MoCo v3 (Chen, Xie & He 2021, "An Empirical Study of Training Self-Supervised Vision Transformers"):
MoCo without the queue. Each view's query (backbone, projector, predictor) is contrasted with the
momentum encoder's keys (backbone, projector) of the other view for the whole global batch; the
momentum follows a cosine from 0.99 to 1. For ViTs the patch projection can be a fixed random one
(`method.freeze_patch_embed`), the paper's fix for the loss spikes of ViT training (Sec. 4.2)."""

from __future__ import annotations

import math
from functools import reduce
from operator import mul

import torch
from torch import nn

from selfsup.errors import UserError
from selfsup.losses.info_nce import MoCoV3Loss
from selfsup.methods.base import StepOutput
from selfsup.methods.momentum_method import MomentumMethod
from selfsup.models.backbones import VITS
from selfsup.models.heads import MLPHead


def freeze_patch_projection(vit: nn.Module) -> None:
    """Re-draw the ViT's patch projection as MoCo v3 does (uniform, Xavier-style over the flattened patch,
    zero bias) and exclude it from training."""
    proj = vit.patch_embed.proj
    bound = math.sqrt(6.0 / (3 * reduce(mul, proj.kernel_size, 1) + proj.out_channels))
    with torch.no_grad():
        nn.init.uniform_(proj.weight, -bound, bound)
        nn.init.zeros_(proj.bias)
    vit.patch_embed.requires_grad_(False)


class MoCoV3(MomentumMethod):
    num_views = 2
    losses = (MoCoV3Loss,)
    target_name = "momentum_encoder"

    @classmethod
    def check_config(cls, cfg, world_size: int) -> None:
        super().check_config(cfg, world_size)
        if cfg.method.freeze_patch_embed and cfg.backbone.name not in VITS:
            raise UserError(
                f"method.freeze_patch_embed freezes a ViT's patch projection; backbone="
                f"{cfg.backbone.name} has none: set method.freeze_patch_embed=false"
            )

    def __init__(self, cfg):
        super().__init__(cfg)
        method = cfg.method
        if method.freeze_patch_embed:  # before the momentum encoder copies the backbone
            freeze_patch_projection(self.backbone)
        self.projector = MLPHead(self.feature_dim, **method.projector)
        self.predictor = MLPHead(method.projector.output_dim, **method.predictor)
        self.make_momentum_target()  # self.momentum_encoder: EMA of backbone + projector

    def training_loss(self, views: list[torch.Tensor]) -> StepOutput:
        # Each view is its own forward (own BatchNorm batch), as in the reference implementation.
        features = [self.backbone(v) for v in views]
        projections = [self.projector(f) for f in features]
        queries = [self.predictor(z) for z in projections]
        with torch.no_grad():
            keys = [self.momentum_encoder(v) for v in views]
        loss = self.loss_fn(queries[0], keys[1]) + self.loss_fn(queries[1], keys[0])
        return StepOutput(
            loss=loss, features=features[0], logs={"momentum": self.current_momentum()}, embeddings=projections[0]
        )
