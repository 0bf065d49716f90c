"""Image decoders and the adversarial critic for the generative pretext tasks.

One `UpConvDecoder` serves the context encoder (RGB output) and colorization (ab or RGB output);
only `out_channels` differs. `MAEDecoder` is MAE's small transformer that predicts masked patches.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class UpConvDecoder(nn.Module):
    """Backbone features -> (B, out_channels, image_size, image_size), DCGAN-generator style.

    A vector (B, in_dim) is mapped by a linear layer to a `start_size` map with `width` channels; a
    feature map (B, in_dim, h, w) (`from_map=True`) by a 1x1 conv, resized to `start_size` if needed.
    Each stride-2 ConvTranspose2d + BN + ReLU then doubles the resolution and halves the channels (down
    to `min_width`). When image_size is not start_size times a power of two (96, 224), the last step
    interpolates to the exact size and applies a 3x3 conv instead. The output is unbounded: the method
    picks the activation matching its target (tanh for [-1, 1] pixels, none for normalised ab).
    """

    def __init__(
        self,
        in_dim: int,
        out_channels: int,
        image_size: int,
        start_size: int = 4,
        width: int = 256,
        min_width: int = 32,
        from_map: bool = False,
    ):
        super().__init__()
        if image_size <= start_size:
            raise ValueError(f"image_size ({image_size}) must exceed start_size ({start_size})")
        self.start_size = start_size
        self.width = width
        self.from_map = from_map
        self.project = (
            nn.Conv2d(in_dim, width, 1, bias=False)
            if from_map
            else nn.Linear(in_dim, width * start_size * start_size, bias=False)
        )

        steps = math.ceil(math.log2(image_size / start_size))
        layers: list[nn.Module] = [nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        channels = width
        for _ in range(steps - 1):
            next_channels = max(min_width, channels // 2)
            layers += [
                nn.ConvTranspose2d(channels, next_channels, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(next_channels),
                nn.ReLU(inplace=True),
            ]
            channels = next_channels
        if start_size * 2**steps == image_size:
            layers.append(nn.ConvTranspose2d(channels, out_channels, 4, stride=2, padding=1))
        else:
            layers += [
                nn.Upsample(size=(image_size, image_size), mode="bilinear", align_corners=False),
                nn.Conv2d(channels, out_channels, 3, padding=1),
            ]
        self.upsample = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        size = self.start_size
        if self.from_map:
            if features.dim() != 4:
                raise ValueError(f"from_map decoder expects (B, D, h, w) features, got {tuple(features.shape)}")
            if features.shape[-2:] != (size, size):
                features = F.interpolate(
                    features, size=(size, size), mode="bilinear", align_corners=False, antialias=True
                )
            start = self.project(features)
        else:
            if features.dim() != 2:
                raise ValueError(
                    f"vector decoder expects (B, D) features, got {tuple(features.shape)}; "
                    f"use from_map=True for feature maps"
                )
            start = self.project(features).view(-1, self.width, size, size)
        return self.upsample(start)


class PatchDiscriminator(nn.Module):
    """DCGAN-style critic (stride-2 convs, BN, LeakyReLU 0.2) giving one real/fake logit per image.

    Depth follows `image_size` so the last map is about 4x4; a 3x3 conv scores each of its patches and
    the logit is their mean, so the module also accepts other input sizes.
    """

    def __init__(self, in_channels: int = 3, image_size: int = 64, width: int = 64, max_width: int = 512):
        super().__init__()
        stages = max(1, int(math.log2(image_size / 4)))
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]  # no BN on the input layer (DCGAN)
        channels = width
        for _ in range(stages - 1):
            next_channels = min(max_width, channels * 2)
            layers += [
                nn.Conv2d(channels, next_channels, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(next_channels),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            channels = next_channels
        layers.append(nn.Conv2d(channels, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).mean(dim=(1, 2, 3))


class MAEDecoder(nn.Module):
    """MAE's lightweight decoder (He et al. 2022, Sec. 3): the encoder's tokens (CLS, then the visible
    patches) are projected to `width`, one shared learned mask token stands in for every hidden patch,
    a fixed 2-D sine-cosine position table (its own, at the decoder's width) says where each token is,
    and `depth` transformer blocks predict every patch's pixels. Only used in pretraining: the encoder
    has to carry the representation, which is what gets evaluated."""

    def __init__(
        self,
        in_dim: int,
        grid_size: tuple[int, int],
        patch_pixels: int,
        width: int = 512,
        depth: int = 8,
        heads: int = 16,
    ):
        super().__init__()
        from timm.models.vision_transformer import Block

        if width % heads:
            raise ValueError(f"decoder width {width} is not a multiple of its {heads} heads")
        self.embed = nn.Linear(in_dim, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.grid_size = tuple(grid_size)
        self.register_buffer("pos_embed", self.position_table(self.grid_size, width), persistent=False)
        self.blocks = nn.Sequential(*(Block(width, heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(depth)))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.pred = nn.Linear(width, patch_pixels)
        # MAE's initialisation: Xavier-uniform linear layers, zero biases, a small random mask token.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.mask_token, std=0.02)

    @staticmethod
    def position_table(grid_size: tuple[int, int], width: int) -> torch.Tensor:
        """(1, 1 + rows * columns, width): zeros for the CLS token, then MAE's 2-D sine-cosine table."""
        from timm.layers import build_sincos2d_pos_embed

        return torch.cat([torch.zeros(1, width), build_sincos2d_pos_embed(list(grid_size), width)])[None]

    def no_weight_decay(self) -> set[str]:
        return {"mask_token"}

    def forward(self, tokens: torch.Tensor, restore: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
        """tokens: (B, 1 + K, in_dim), CLS then the K visible patches in the order they were kept;
        restore: (B, L), for each image position the index of its token in [visible..., masked...];
        grid_size: the images' (rows, columns) of patches. Returns (B, L, patch_pixels), in image order."""
        x = self.embed(tokens)
        batch, num_patches = restore.shape
        hidden = self.mask_token.to(x.dtype).expand(batch, num_patches + 1 - x.shape[1], -1)
        patches = torch.cat([x[:, 1:], hidden], dim=1)
        patches = patches.gather(1, restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        table = (
            self.pos_embed
            if tuple(grid_size) == self.grid_size
            else (self.position_table(grid_size, x.shape[-1]).to(x.device))
        )  # crops at another size than data.resolution
        x = torch.cat([x[:, :1], patches], dim=1) + table
        return self.pred(self.norm(self.blocks(x)))[:, 1:]
