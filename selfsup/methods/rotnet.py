"""RotNet (Gidaris et al. 2018): classify which of 0/90/180/270 degrees an image was rotated by."""

from __future__ import annotations

import torch
from torch import nn

from selfsup.data.pretext import rotate_batch
from selfsup.methods.base import StepOutput
from selfsup.methods.pretext_base import PretextMethod
from selfsup.models.heads import MLPHead


class RotNet(PretextMethod):
    losses = (nn.CrossEntropyLoss,)

    def __init__(self, cfg):
        super().__init__(cfg)
        head = cfg.method.head
        self.head = MLPHead(self.feature_dim, head.hidden_dim, 4, head.num_layers, head.batch_norm)

    def training_loss(self, views: list[torch.Tensor]) -> StepOutput:
        x = views[0]
        all_rotations = self.cfg.method.all_rotations
        images, labels = rotate_batch(x, all_rotations)  # label k: rot90 by k, grouped by k when all four
        features = self.backbone(self._memory_format(images))
        logits = self.head(features)
        accuracy = (logits.argmax(1) == labels).float().mean()
        # All four rotations: the k = 0 block is the unrotated batch, its features come for free.
        probe_features = features[: len(x)] if all_rotations else self.full_image_features(x)
        return StepOutput(loss=self.loss_fn(logits, labels), features=probe_features, logs={"rotation_acc": accuracy})
