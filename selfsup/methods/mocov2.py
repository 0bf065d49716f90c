"""MoCo v2 (He et al. 2020; Chen et al. 2020, "Improved Baselines with Momentum Contrastive
Learning"): a query encoder (backbone + MLP head) against a momentum key encoder, InfoNCE with the
positive key at logit 0 and a queue of K negatives holding the keys of past global batches."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup import distributed
from selfsup.losses.info_nce import InfoNCELoss
from selfsup.methods.base import StepOutput
from selfsup.methods.momentum_method import MomentumMethod
from selfsup.methods.queue import FeatureQueue, check_queue_config
from selfsup.models.heads import MLPHead


class MoCoV2(MomentumMethod):
    num_views = 2
    losses = (InfoNCELoss,)
    target_name = "key_encoder"

    def __init__(self, cfg):
        super().__init__(cfg)
        method = cfg.method
        self.projector = MLPHead(self.feature_dim, **method.projector)
        self.make_momentum_target()  # self.key_encoder: EMA of backbone + projector
        self.queue = FeatureQueue(method.queue_size, method.projector.output_dim)  # buffers: checkpointed
        self.symmetric = method.symmetric

    @classmethod
    def check_config(cls, cfg, world_size: int) -> None:
        super().check_config(cfg, world_size)
        symmetric = cfg.method.symmetric
        check_queue_config(
            "method.queue_size",
            cfg.method.queue_size,
            cfg.data.batch_size,
            world_size,
            2 if symmetric else 1,
            " x 2 key views (method.symmetric)" if symmetric else "",
        )

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
