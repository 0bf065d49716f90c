"""Image decoders and the adversarial critic for the generative pretext tasks.

One `UpConvDecoder` serves the context encoder (RGB output) and colorization (ab or RGB output);
only `out_channels` differs.
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

    def __init__(self, in_dim: int, out_channels: int, image_size: int, start_size: int = 4, width: int = 256,
                 min_width: int = 32, from_map: bool = False):
        super().__init__()
        if image_size <= start_size:
            raise ValueError(f"image_size ({image_size}) must exceed start_size ({start_size})")
        self.start_size = start_size
        self.width = width
        self.from_map = from_map
        self.project = (nn.Conv2d(in_dim, width, 1, bias=False) if from_map
                        else nn.Linear(in_dim, width * start_size * start_size, bias=False))

        steps = math.ceil(math.log2(image_size / start_size))
        layers: list[nn.Module] = [nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        channels = width
        for _ in range(steps - 1):
            next_channels = max(min_width, channels // 2)
            layers += [nn.ConvTranspose2d(channels, next_channels, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(next_channels), nn.ReLU(inplace=True)]
            channels = next_channels
        if start_size * 2 ** steps == image_size:
            layers.append(nn.ConvTranspose2d(channels, out_channels, 4, stride=2, padding=1))
        else:
            layers += [nn.Upsample(size=(image_size, image_size), mode="bilinear", align_corners=False),
                       nn.Conv2d(channels, out_channels, 3, padding=1)]
        self.upsample = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        size = self.start_size
        if self.from_map:
            if features.dim() != 4:
                raise ValueError(f"from_map decoder expects (B, D, h, w) features, got {tuple(features.shape)}")
            if features.shape[-2:] != (size, size):
                features = F.interpolate(features, size=(size, size), mode="bilinear", align_corners=False,
                                         antialias=True)
            start = self.project(features)
        else:
            if features.dim() != 2:
                raise ValueError(f"vector decoder expects (B, D) features, got {tuple(features.shape)}; "
                                 f"use from_map=True for feature maps")
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
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, stride=2, padding=1),
                                   nn.LeakyReLU(0.2, inplace=True)]  # no BN on the input layer (DCGAN)
        channels = width
        for _ in range(stages - 1):
            next_channels = min(max_width, channels * 2)
            layers += [nn.Conv2d(channels, next_channels, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(next_channels), nn.LeakyReLU(0.2, inplace=True)]
            channels = next_channels
        layers.append(nn.Conv2d(channels, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).mean(dim=(1, 2, 3))
