"""SwAV (Caron et al. 2020): every view's L2-normalised projection is scored against K unit prototypes; the
codes of each global view (Sinkhorn-Knopp over the global batch, equal mass on every prototype) are
predicted from every other view, local views included. The prototypes stay fixed during the first epoch,
and with a small batch a queue of past global-view projections joins the Sinkhorn problem."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup import distributed
from selfsup.data.transforms import global_view_count
from selfsup.errors import UserError
from selfsup.losses.swav import SwAVLoss
from selfsup.methods.base import SSLMethod, StepOutput, forward_by_resolution
from selfsup.methods.queue import FeatureQueue, check_queue_config
from selfsup.models.heads import MLPHead, prototypes


class SwAV(SSLMethod):
    losses = (SwAVLoss,)

    def __init__(self, cfg):
        super().__init__(cfg)
        method = cfg.method
        self.projector = MLPHead(self.feature_dim, **method.projector)
        self.prototypes = prototypes(method.projector.output_dim, method.num_prototypes)
        self.global_views = global_view_count(cfg.augmentation)
        if method.queue_length:
            # One queue per global view of the projections of the whole global batch, identical on every
            # rank (so a checkpoint, written by rank 0, resumes every rank); each rank adds its share.
            self.queues = nn.ModuleList(
                FeatureQueue(method.queue_length, method.projector.output_dim) for _ in range(self.global_views)
            )
            self.register_buffer("queued_rows", torch.zeros((), dtype=torch.long))  # full once >= queue_length
        self._queue_full = False  # what queued_rows says, once true (reading the buffer syncs with the device)

    @classmethod
    def check_config(cls, cfg, world_size: int) -> None:
        super().check_config(cfg, world_size)
        views, method = len(cfg.augmentation.views), cfg.method
        if views < 2 or global_view_count(cfg.augmentation) < 1:
            raise UserError(
                f"SwAV needs at least 2 views, at least one of them global (augmentation.views has "
                f"{views}): use augmentation=swav"
            )
        if method.queue_length:
            check_queue_config("method.queue_length", method.queue_length, cfg.data.batch_size, world_size)
        for key in ("queue_start_epoch", "freeze_prototypes_epochs"):
            if method[key] < 0:
                raise UserError(f"method.{key} must be >= 0, got {method[key]}")

    def training_loss(self, views: list[torch.Tensor]) -> StepOutput:
        features = forward_by_resolution(self.backbone, views)  # one backbone forward per resolution
        # One projector batch over all views, as the reference code's head
        embeddings = F.normalize(self.projector(torch.cat(features)), dim=1)
        scores = self.prototypes(embeddings).chunk(len(views))
        queued = self._queued_scores(embeddings[: self.global_views * len(views[0])].detach())
        logs = {"swav_queue_in_use": torch.tensor(float(queued is not None))} if self.cfg.method.queue_length else {}
        loss = self.loss_fn(list(scores), self.global_views, queued)
        return StepOutput(loss=loss, features=features[0], logs=logs, embeddings=embeddings[: len(views[0])])

    @torch.no_grad()
    def _queued_scores(self, global_embeddings: torch.Tensor) -> list[torch.Tensor] | None:
        """From epoch `queue_start_epoch` on: the scores of this rank's share of each full queue (None while
        the queues fill or are off), computed before this step's global-view projections are added."""
        if not self.cfg.method.queue_length or self.current_epoch < self.cfg.method.queue_start_epoch:
            return None
        self._queue_full = self._queue_full or bool(self.queued_rows >= self.cfg.method.queue_length)
        scores = None
        if self._queue_full:
            shares = [
                q.queue.view(distributed.world_size(), -1, q.queue.shape[1])[distributed.rank()] for q in self.queues
            ]
            scores = [self.prototypes(share) for share in shares]
        for queue, embeddings in zip(self.queues, global_embeddings.chunk(self.global_views)):
            queue.enqueue(distributed.gather(embeddings))
        self.queued_rows.add_(len(global_embeddings) // self.global_views * distributed.world_size())
        return scores

    def on_before_optimizer_step(self, optimizer) -> None:
        super().on_before_optimizer_step(optimizer)
        # The paper keeps the prototypes fixed during the first epoch: it helps the codes at the start.
        if self.current_epoch < self.cfg.method.freeze_prototypes_epochs:
            for param in self.prototypes.parameters():
                param.grad = None
