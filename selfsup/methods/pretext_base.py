"""What the pretext-task methods (RotNet, Jigsaw, context encoder, colorization, MAE) share beyond the base:
they take ONE augmented view and build their inputs and labels from it on the device."""

from __future__ import annotations

import torch

from selfsup.methods.base import SSLMethod


class PretextMethod(SSLMethod):
    num_views = 1

    def full_image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features of the unaltered images for the online probe: a forward without autograd
        (a third of a training step's cost); in train mode, so BatchNorm also tracks whole images, which
        is what the kNN / linear evaluations feed."""
        with torch.no_grad():
            return self.backbone(self._memory_format(images))
