"""MoCo v2 (He et al. 2020; Chen et al. 2020, "Improved Baselines with Momentum Contrastive
Learning"): a query encoder (backbone + MLP head) against a momentum key encoder, InfoNCE with the
positive key at logit 0 and a queue of K negatives holding the keys of past global batches."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup import distributed
from selfsup.errors import UserError
from selfsup.methods.base import StepOutput
from selfsup.methods.momentum import make_target
from selfsup.methods.momentum_method import MomentumMethod
from selfsup.methods.queue import FeatureQueue, check_queue_divisible
from selfsup.models.heads import MLPHead


class MoCoV2(MomentumMethod):
    def __init__(self, cfg):
        super().__init__(cfg)
        method = cfg.method
        if len(cfg.augmentation.views) != 2:
            raise UserError(f"MoCo uses 2 views, augmentation.views has {len(cfg.augmentation.views)}")
        self.projector = MLPHead(self.feature_dim, **method.projector)
        self.key_encoder = make_target(self._query_encoder())
        self.queue = FeatureQueue(method.queue_size, method.projector.output_dim)  # buffers: checkpointed
        self.symmetric = method.symmetric
        # Fail before the (possibly long) kNN-at-init when the device count is known from the
        # config; on_fit_start checks again with the world size the trainer actually has.
        devices = cfg.trainer.get("devices") if cfg.get("trainer") is not None else None
        if isinstance(devices, int) and devices > 0:
            self._check_queue(devices * cfg.trainer.get("num_nodes", 1))

    def _query_encoder(self) -> nn.Module:
        # Built on the fly, not stored: an attribute would register backbone twice in state_dict.
        return nn.Sequential(self.backbone, self.projector)

    def momentum_pairs(self):
        return [(self._query_encoder(), self.key_encoder)]

    def _check_queue(self, world_size: int) -> None:
        keys_per_step = self.cfg.data.batch_size * world_size * (2 if self.symmetric else 1)
        try:
            check_queue_divisible(self.cfg.method.queue_size, keys_per_step)
        except ValueError as err:
            views = " x 2 key views (method.symmetric)" if self.symmetric else ""
            raise UserError(
                f"{err} (method.queue_size={self.cfg.method.queue_size}, "
                f"data.batch_size={self.cfg.data.batch_size} x {world_size} devices{views})"
            ) from None

    def on_fit_start(self) -> None:
        self._check_queue(self.trainer.world_size)

    @torch.no_grad()
    def _encode_keys(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised keys from the momentum encoder, without gradient.

        The one place keys are computed, so the seam for ShuffleBN: shuffle `images` across ranks
        before the key encoder and unshuffle the keys after it, so that BatchNorm statistics of a
        key batch do not come from the same images as its queries' (He et al. 2020, Sec. 3.3).
        On by `strategy.shuffle_bn` (strategy=ddp_shufflebn, or single_shufflebn on one device)."""
        if not self.cfg.get("strategy", {}).get("shuffle_bn", False):
            return F.normalize(self.key_encoder(images), dim=1)
        shuffled, unshuffle = distributed.batch_shuffle(images)
        return distributed.batch_unshuffle(F.normalize(self.key_encoder(shuffled), dim=1), unshuffle)

    def training_loss(self, views: list[torch.Tensor]) -> StepOutput:
        # Each view is its own forward (own BatchNorm batch), as in the reference implementation.
        pairs = [(views[0], views[1]), (views[1], views[0])] if self.symmetric else [(views[0], views[1])]
        negatives = self.queue.negatives()  # snapshot: enqueue below overwrites the buffer in place
        losses, keys, features, queries = [], [], [], []
        for query_view, key_view in pairs:
            features.append(self.backbone(query_view))
            queries.append(self.projector(features[-1]))
            keys.append(self._encode_keys(key_view))
            losses.append(self.loss_fn(queries[-1], keys[-1], negatives))
        loss = torch.stack(losses).mean()
        self.queue.enqueue(distributed.gather(torch.cat(keys)))  # the whole global batch, oldest out
        return StepOutput(
            loss=loss, features=features[0], logs={"momentum": self.current_momentum()}, embeddings=queries[0]
        )
