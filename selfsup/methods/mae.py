"""MAE, masked autoencoders (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners").

Hide a random 75% of each image's patches, run the ViT encoder on the visible quarter only (the
saving that makes long schedules affordable), and let a small decoder with mask tokens predict the
pixels of the hidden patches; the loss scores the hidden patches only. The context encoder's idea,
inpainting from context, made to scale: many small random holes instead of one central one, the
encoder never sees a placeholder, and no adversary. MAE features are meant to be fine-tuned
(`primary_eval: finetune`, eval=finetune_vit: its recipe, through timm); linear probing comes second.
"""

from __future__ import annotations

import torch

from selfsup.data.batch_ops import denormalize
from selfsup.errors import UserError
from selfsup.losses.mae import MAELoss
from selfsup.methods.base import StepOutput
from selfsup.methods.pretext_base import PretextMethod
from selfsup.models.backbones import VITS, vit_patch_size
from selfsup.models.decoders import MAEDecoder


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, L, patch_size * patch_size * C), patches in row-major order (the ViT's token order)."""
    batch, channels, height, width = images.shape
    p = patch_size
    x = images.reshape(batch, channels, height // p, p, width // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(batch, (height // p) * (width // p), p * p * channels)


def unpatchify(patches: torch.Tensor, patch_size: int, grid: tuple[int, int], channels: int = 3) -> torch.Tensor:
    """The inverse of `patchify` for a `grid` = (rows, columns) of patches."""
    (rows, cols), p = grid, patch_size
    x = patches.reshape(len(patches), rows, cols, p, p, channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(len(patches), channels, rows * p, cols * p)


def random_masking(batch: int, num_patches: int, ratio: float, device) -> tuple[torch.Tensor, ...]:
    """Per image, an independent uniformly random set of exactly int(L * (1 - ratio)) visible patches.

    Returns (keep (B, K): the visible patches' positions, restore (B, L): for each position the index
    of its token in [visible..., hidden...], mask (B, L): 1 hidden, 0 visible), MAE's argsort-of-noise way."""
    visible = int(num_patches * (1 - ratio))
    shuffle = torch.rand(batch, num_patches, device=device).argsort(dim=1)
    restore = shuffle.argsort(dim=1)
    mask = torch.ones(batch, num_patches, device=device)
    mask[:, :visible] = 0
    return shuffle[:, :visible], restore, mask.gather(1, restore)


class MAE(PretextMethod):
    losses = (MAELoss,)

    @classmethod
    def check_config(cls, cfg, world_size: int) -> None:
        super().check_config(cfg, world_size)
        backbone, resolution, ratio = cfg.backbone, cfg.data.resolution, cfg.method.mask_ratio
        if backbone.name not in VITS:
            raise UserError(
                f"method=mae encodes the visible patches with a ViT, not backbone={backbone.name}: "
                f"use backbone={'|'.join(VITS)}"
            )
        num_patches = (resolution // (backbone.patch_size or vit_patch_size(resolution))) ** 2
        if not 0.0 < ratio < 1.0 or int(num_patches * (1 - ratio)) < 1:
            raise UserError(
                f"method.mask_ratio={ratio} must leave at least one of the {num_patches} patches "
                "visible and hide at least one: use a value in (0, 1), the paper's 0.75"
            )

    def __init__(self, cfg):
        super().__init__(cfg)
        self.patch_size = self.backbone.patch_size
        grid = tuple(self.backbone.patch_embed.grid_size)
        self.decoder = MAEDecoder(self.feature_dim, grid, self.patch_size**2 * 3, **cfg.method.decoder)

    def grid(self, images: torch.Tensor) -> tuple[int, int]:
        """(rows, columns) of patches: data.resolution's grid, or another crop size's."""
        return images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size

    def encode_visible(self, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """The ViT on the `keep` patches only: (B, 1 + K, D), the final-norm CLS token then the visible
        tokens. Positions are added (timm's own step, which also resizes the table for another crop size)
        before the hidden patches are dropped, so each token knows its place."""
        vit = self.backbone
        x = vit._pos_embed(vit.patch_embed(images))  # (B, 1 + L, D): CLS, then the patches in image order
        patches = x[:, 1:].gather(1, keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        return vit.norm(vit.blocks(torch.cat([x[:, :1], patches], dim=1)))

    def reconstruct(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(predicted patches (B, L, p * p * 3), mask (B, L), the encoder's CLS token (B, D)) for a fresh
        random mask per image."""
        grid = self.grid(images)
        keep, restore, mask = random_masking(len(images), grid[0] * grid[1], self.cfg.method.mask_ratio, images.device)
        tokens = self.encode_visible(images, keep)
        return self.decoder(tokens, restore, grid), mask, tokens[:, 0]

    def training_loss(self, views: list[torch.Tensor]) -> StepOutput:
        x = views[0]
        pred, mask, cls = self.reconstruct(x)
        loss = self.loss_fn(pred, patchify(x, self.patch_size), mask)
        # The online probe reads the CLS token of the masked encoding: whole images would cost another
        # encoder forward over all the tokens (4x the visible ones), undoing much of what makes MAE cheap.
        # It is a monitor; the kNN monitor and the final evaluations embed whole images.
        return StepOutput(loss=loss, features=cls)

    def image_rows(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        pred, mask, _ = self.reconstruct(images)
        patches = patchify(images, self.patch_size)
        hidden = mask.unsqueeze(-1).to(patches.dtype)
        # Hidden patches shown as the dataset mean: 0 in the normalised space the images are in here.
        grid = self.grid(images)
        masked = unpatchify(patches * (1 - hidden), self.patch_size, grid)
        pred = self.loss_fn.to_pixels(pred, patches).to(patches.dtype)
        filled = unpatchify(patches * (1 - hidden) + pred * hidden, self.patch_size, grid)
        mean, std = self.cfg.data.mean, self.cfg.data.std
        return {
            "input": denormalize(images, mean, std),
            "masked": denormalize(masked, mean, std),
            "reconstruction": denormalize(filled, mean, std),
        }
