"""Colorization (Zhang, Isola & Efros 2016): the backbone sees only the lightness of the image, a
decoder (the context encoder's `UpConvDecoder`) predicts its colour as the ab channels of CIE Lab."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.data.batch_ops import denormalize
from selfsup.data.pretext import lab_to_rgb, rgb_to_lab
from selfsup.errors import UserError
from selfsup.losses.colorization import ColorizationLoss
from selfsup.methods.base import StepOutput
from selfsup.methods.pretext_base import PretextMethod
from selfsup.models.decoders import UpConvDecoder


class Colorization(PretextMethod):
    losses = (ColorizationLoss,)

    def __init__(self, cfg):
        super().__init__(cfg)
        method = cfg.method
        out_size = cfg.data.resolution // method.output_stride
        self.decoder = UpConvDecoder(self.feature_dim, self.loss_fn.num_outputs, out_size, **method.decoder)
        self.register_buffer("pixel_mean", torch.tensor(cfg.data.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.data.std).view(1, -1, 1, 1), persistent=False)

    @classmethod
    def check_config(cls, cfg, world_size: int) -> None:
        super().check_config(cfg, world_size)
        stride, resolution, start = cfg.method.output_stride, cfg.data.resolution, cfg.method.decoder.start_size
        if stride < 1 or resolution // stride <= start:
            raise UserError(
                f"method.output_stride={stride} leaves {resolution // max(stride, 1)}px of a "
                f"{resolution}px image: the decoder needs more than method.decoder.start_size="
                f"{start}; lower the stride"
            )

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised RGB -> (backbone input, L (B, 1, H, W), ab (B, 2, H, W)), in float32.

        The backbone input is `self.evaluation_input(x)` (method.evaluation_input: the grey image of
        the same lightness), so every evaluation feeds the backbone what it is trained on."""
        with torch.autocast(x.device.type, enabled=False):
            lab = rgb_to_lab((x.float() * self.pixel_std + self.pixel_mean).clamp(0.0, 1.0))
            return self.evaluation_input(x), lab[:, :1], lab[:, 1:]

    def training_loss(self, views: list[torch.Tensor]) -> StepOutput:
        grey, _, ab = self._split(views[0])
        loss = self.loss_fn(self.decoder(self.backbone(self._memory_format(grey))), ab)
        # The online probe, like the kNN monitor and the final evaluations, reads the grey input.
        return StepOutput(loss=loss, features=self.full_image_features(grey))

    def image_rows(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        grey, lightness, ab = self._split(images)
        predicted_ab = self.loss_fn.decode(self.decoder(self.backbone(self._memory_format(grey))))
        predicted_ab = F.interpolate(predicted_ab, size=ab.shape[-2:], mode="bilinear", align_corners=False)
        return {
            "grayscale": denormalize(grey, self.cfg.data.mean, self.cfg.data.std),
            "prediction": lab_to_rgb(torch.cat([lightness, predicted_ab], dim=1)),
            "truth": lab_to_rgb(torch.cat([lightness, ab], dim=1)),
        }
