"""Jigsaw puzzles (Noroozi & Favaro 2016): cut a 3x3 grid of jittered tiles, shuffle it with one of N
maximally distinct permutations, pass every tile through the shared backbone (siamese), concatenate the
tile features in shuffled order and classify which permutation was applied."""

from __future__ import annotations

import torch
from torch import nn

from selfsup.data.pretext import jigsaw_tiles, load_permutations, normalize_tiles
from selfsup.errors import UserError
from selfsup.methods.base import StepOutput
from selfsup.methods.pretext_base import PretextMethod
from selfsup.models.heads import MLPHead

TILES = 9


class Jigsaw(PretextMethod):
    losses = (nn.CrossEntropyLoss,)

    def __init__(self, cfg):
        super().__init__(cfg)
        method = cfg.method
        permutations = load_permutations(method.num_permutations)
        self.register_buffer("permutations", permutations, persistent=False)  # (N, 9), read from the repo
        self.tile_projection = nn.Sequential(
            nn.Linear(self.feature_dim, method.tile_dim, bias=False),
            nn.BatchNorm1d(method.tile_dim),
            nn.ReLU(inplace=True),
        )
        head = method.head
        self.head = MLPHead(
            TILES * method.tile_dim, head.hidden_dim, len(permutations), head.num_layers, head.batch_norm
        )

    @classmethod
    def check_config(cls, cfg, world_size: int) -> None:
        super().check_config(cfg, world_size)
        method, resolution = cfg.method, cfg.data.resolution
        try:
            load_permutations(method.num_permutations)
        except FileNotFoundError as err:
            raise UserError(f"method.num_permutations={method.num_permutations}: {err}") from None
        cell = resolution // 3
        if method.tile_size is not None and not 1 <= method.tile_size <= cell:
            raise UserError(
                f"method.tile_size={method.tile_size} must fit the {cell}px grid cell of a "
                f"{resolution}px crop: set method.tile_size<={cell} or null"
            )

    def training_loss(self, views: list[torch.Tensor]) -> StepOutput:
        x = views[0]
        method = self.cfg.method
        tiles, labels = jigsaw_tiles(
            x, self.permutations, tile_size=method.tile_size, jitter=method.jitter, color_drop=method.color_drop
        )  # (B, 9, C, t, t)
        tiles = normalize_tiles(tiles)
        batch = tiles.shape[0]
        features = self.backbone(self._memory_format(tiles.flatten(0, 1)))  # (9B, D), sample-major
        tile_codes = self.tile_projection(features).view(batch, -1)  # concatenated in tile order
        logits = self.head(tile_codes)
        accuracy = (logits.argmax(1) == labels).float().mean()
        return StepOutput(
            loss=self.loss_fn(logits, labels), features=self.full_image_features(x), logs={"jigsaw_acc": accuracy}
        )
