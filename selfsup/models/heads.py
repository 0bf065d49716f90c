"""Projection / prediction heads: Linear-BN-ReLU blocks ending in a Linear (optionally BN),
the shape shared by SimCLR, MoCo v2, BYOL, Barlow Twins, SimSiam, VICReg, SwAV and NNCLR heads; DINO's head;
and the weight-normalised prototypes of DINO and SwAV."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn


class MLPHead(nn.Sequential):
    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int = 2,
        batch_norm: bool = True,
        last_batch_norm: bool = False,
        activation: Callable[[], nn.Module] = partial(nn.ReLU, inplace=True),
    ):
        if num_layers < 1:
            raise ValueError(f"an MLP head needs at least one layer, got num_layers={num_layers}")
        layers: list[nn.Module] = []
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            layers.append(nn.Linear(d_in, d_out, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(d_out))
            layers.append(activation())
        layers.append(nn.Linear(dims[-1], output_dim, bias=not last_batch_norm))
        if last_batch_norm:
            layers.append(nn.BatchNorm1d(output_dim, affine=False))
        super().__init__(*layers)
        self.output_dim = output_dim


def prototypes(input_dim: int, count: int, learn_norm: bool = False) -> nn.Module:
    """A weight-normalised Linear(input_dim -> count), no bias: row k is w_k = g_k v_k / |v_k|. With the
    norms g fixed at 1 (learn_norm false), its outputs on L2-normalised inputs are cosines to `count`
    unit prototypes (DINO's last layer, SwAV's prototypes)."""
    layer = nn.utils.parametrizations.weight_norm(nn.Linear(input_dim, count, bias=False))
    norm = layer.parametrizations.weight.original0  # g, one per output unit
    norm.data.fill_(1.0)
    norm.requires_grad_(learn_norm)
    return layer


class DINOHead(nn.Module):
    """DINO's projection head (Caron et al. 2021): an MLP (GELU) down to a `bottleneck_dim` embedding,
    L2-normalised, then a weight-normalised linear layer to `output_dim` logits. With `norm_last_layer`
    the last layer's norm g stays 1, so the logits are cosines to K prototypes (the paper: stabler)."""

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        output_dim: int = 65536,
        num_layers: int = 3,
        batch_norm: bool = False,
        norm_last_layer: bool = True,
    ):
        super().__init__()
        self.mlp = MLPHead(input_dim, hidden_dim, bottleneck_dim, num_layers, batch_norm, activation=nn.GELU)
        for module in self.mlp.modules():
            if isinstance(module, nn.Linear):  # the reference initialisation (a ViT's)
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        self.last_layer = prototypes(bottleneck_dim, output_dim, learn_norm=not norm_last_layer)
        self.output_dim = output_dim

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The L2-normalised bottleneck embedding (what the collapse monitor watches)."""
        return F.normalize(self.mlp(x), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(self.embed(x))
