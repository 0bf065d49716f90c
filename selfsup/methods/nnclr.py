"""NNCLR (Dwibedi et al. 2021): SimCLR's contrast with a predictor, where the positive for each view is
the nearest neighbour of its projection in a support set (a queue of the projections of past global
batches), which brings semantically close images together beyond what augmentation can."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup import distributed
from selfsup.losses.nnclr import NNCLRLoss
from selfsup.methods.base import SSLMethod, StepOutput
from selfsup.methods.queue import FeatureQueue, check_queue_config
from selfsup.models.heads import MLPHead


class NNCLR(SSLMethod):
    num_views = 2
    losses = (NNCLRLoss,)

    def __init__(self, cfg):
        super().__init__(cfg)
        method = cfg.method
        self.projector = MLPHead(self.feature_dim, **method.projector)
        self.predictor = MLPHead(method.projector.output_dim, **method.predictor)
        self.support = FeatureQueue(method.queue_size, method.projector.output_dim)  # buffers: checkpointed

    @classmethod
    def check_config(cls, cfg, world_size: int) -> None:
        super().check_config(cfg, world_size)
        check_queue_config("method.queue_size", cfg.method.queue_size, cfg.data.batch_size, world_size)

    def training_loss(self, views: list[torch.Tensor]) -> StepOutput:
        # One forward over both views: BatchNorm sees the whole 2B batch, as SimCLR's
        features = self.backbone(torch.cat(views))
        projections = self.projector(features)
        z1, z2 = projections.chunk(2)
        p1, p2 = self.predictor(projections).chunk(2)
        # The buffer itself, no copy: the lookup carries no gradient, so backward never reads it
        loss, similarity = self.loss_fn((z1, z2), (p1, p2), self.support.queue)
        # The paper's support set: view 1's projections of the global batch, oldest out
        self.support.enqueue(distributed.gather(F.normalize(z1.detach().float(), dim=1)))
        return StepOutput(
            loss=loss,
            features=features[: len(views[0])],
            embeddings=z1,
            logs={"nnclr_neighbour_similarity": similarity},
        )
