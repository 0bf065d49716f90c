"""Projection / prediction heads: Linear-BN-ReLU blocks ending in a Linear (optionally BN),
the shape shared by SimCLR, MoCo v2, BYOL and Barlow Twins heads."""
from __future__ import annotations

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
    ):
        if num_layers < 1:
            raise ValueError(f"an MLP head needs at least one layer, got num_layers={num_layers}")
        layers: list[nn.Module] = []
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            layers.append(nn.Linear(d_in, d_out, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(d_out))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Linear(dims[-1], output_dim, bias=not last_batch_norm))
        if last_batch_norm:
            layers.append(nn.BatchNorm1d(output_dim, affine=False))
        super().__init__(*layers)
        self.output_dim = output_dim
