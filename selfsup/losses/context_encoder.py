"""The context encoder's joint loss (Pathak et al. 2016): masked reconstruction plus, optionally, an
adversarial term from a critic that tells real images from inpainted ones."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.losses.inpainting import InpaintingLoss


class ContextEncoderLoss(InpaintingLoss):
    """`forward(pred, target, mask)` is the reconstruction loss of `InpaintingLoss`; with `adversarial`
    the generator minimises `reconstruction_weight * reconstruction + adversarial_weight * adversarial`
    (the paper: 0.999 / 0.001) and the critic the usual GAN cross-entropy, both on logits."""

    def __init__(
        self,
        overlap: int = 4,
        overlap_weight: float = 10.0,
        adversarial: bool = True,
        reconstruction_weight: float = 0.999,
        adversarial_weight: float = 0.001,
    ):
        super().__init__(overlap, overlap_weight)
        if reconstruction_weight < 0 or adversarial_weight < 0:
            raise ValueError(f"loss weights must be >= 0, got {reconstruction_weight}, {adversarial_weight}")
        self.adversarial = adversarial
        self.reconstruction_weight = reconstruction_weight
        self.adversarial_weight = adversarial_weight

    def generator_loss(
        self, reconstruction: torch.Tensor, fake_logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(joint loss, adversarial term): the inpainted images should be scored real."""
        adversarial = _bce(fake_logits, 1.0)
        return self.reconstruction_weight * reconstruction + self.adversarial_weight * adversarial, adversarial

    @staticmethod
    def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return (_bce(real_logits, 1.0) + _bce(fake_logits, 0.0)) / 2


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))
