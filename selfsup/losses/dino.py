"""The DINO self-distillation loss (Caron et al. 2021): the student's softmax matches the centred,
sharpened softmax of the EMA teacher, across views."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup import distributed


def pair_mask(teacher_views: int, student_views: int) -> torch.Tensor:
    """(teacher_views, student_views) bool: which (teacher view, student view) pairs are compared. Every
    pair except a view with itself: the teacher's views are the student's first `teacher_views` views."""
    return torch.arange(teacher_views)[:, None] != torch.arange(student_views)[None, :]


class DINOLoss(nn.Module):
    """Mean over the pairs of `pair_mask` of the cross-entropy H(P_t, P_s), each averaged over the batch:
    P_s = softmax(s / student_temperature), P_t = softmax((t - center) / teacher_temperature).

    Centring (subtracting `center`, an EMA of the teacher's mean logits over the global batch) keeps one
    dimension from dominating; sharpening (a low teacher temperature) keeps the output from going uniform.
    The center is a buffer (checkpointed) updated after each loss with the teacher logits of all ranks.
    The teacher temperature warms up linearly from `warmup_teacher_temperature` over the first
    `warmup_teacher_temperature_epochs` (`teacher_temperature_at`), then stays at `teacher_temperature`.
    """

    def __init__(
        self,
        output_dim: int,
        student_temperature: float = 0.1,
        teacher_temperature: float = 0.07,
        warmup_teacher_temperature: float = 0.04,
        warmup_teacher_temperature_epochs: float = 30.0,
        center_momentum: float = 0.9,
    ):
        super().__init__()
        if min(student_temperature, teacher_temperature, warmup_teacher_temperature) <= 0:
            raise ValueError("DINO temperatures must be > 0")
        if not 0.0 <= center_momentum <= 1.0 or warmup_teacher_temperature_epochs < 0:
            raise ValueError("DINO center_momentum must be in [0, 1] and the warm-up epochs >= 0")
        self.student_temperature = student_temperature
        self.teacher_temperature = teacher_temperature
        self.warmup_teacher_temperature = warmup_teacher_temperature
        self.warmup_epochs = warmup_teacher_temperature_epochs
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, output_dim))

    def teacher_temperature_at(self, epoch: float) -> float:
        """The teacher temperature at a (fractional) epoch: optimiser steps / steps per epoch."""
        if epoch >= self.warmup_epochs:
            return self.teacher_temperature
        start, end = self.warmup_teacher_temperature, self.teacher_temperature
        return start + (end - start) * epoch / self.warmup_epochs

    def forward(
        self, student: list[torch.Tensor], teacher: list[torch.Tensor], teacher_temperature: float
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """student: logits (B, K) per view, global views first; teacher: logits (B, K) per global view.
        Returns (loss, diagnostics): the teacher's entropy h(P_t) and the KL(P_t || P_s) = H(P_t, P_s) - h(P_t)
        averaged over the compared pairs, the paper's collapse study (Sec. 5.3): a uniform teacher has
        maximal entropy, a constant output zero KL."""
        log_p_student = torch.stack([F.log_softmax(s.float() / self.student_temperature, dim=-1) for s in student])
        teacher = torch.stack(teacher).detach().float()  # (T, B, K)
        p_teacher = F.softmax((teacher - self.center) / teacher_temperature, dim=-1)
        with torch.autocast(teacher.device.type, enabled=False):  # else mixed precision runs this in bf16/fp16
            cross_entropy = -torch.einsum("tbk,sbk->ts", p_teacher, log_p_student) / teacher.shape[1]  # (T, S)
        mask = pair_mask(len(teacher), len(student)).to(cross_entropy.device)
        loss = cross_entropy[mask].mean()
        with torch.no_grad():
            entropy = -(p_teacher * torch.log(p_teacher.clamp_min(1e-12))).sum(-1).mean(-1)  # (T,)
            kl = (cross_entropy - entropy[:, None])[mask].mean()
            self._update_center(teacher)
        return loss, {"teacher_entropy": entropy.mean(), "kl": kl}

    @torch.no_grad()
    def _update_center(self, teacher: torch.Tensor) -> None:
        """center <- m * center + (1 - m) * mean teacher logits over the global batch (every rank's
        local batch is the same size, so the mean of the ranks' means is the global mean)."""
        batch_center = distributed.gather(teacher.mean(dim=(0, 1))[None]).mean(dim=0, keepdim=True)
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1.0 - self.center_momentum)
