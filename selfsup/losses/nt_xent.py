"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR (Chen et al., 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup import distributed


class NTXentLoss(nn.Module):
    """Each view's positive is the other view of the same image; every other view in the
    *global* batch (all ranks, gathered with gradient) is a negative.

    Rows are the local 2B views, columns the global 2N views; the local sample i sits at global
    position rank * B + i (`distributed.global_positions`), so labels are offset by rank (the bug of
    lightly #1176 avoided).

    Scale: the mean over all 2B anchors, half of the official code's loss (SimCLR's TF
    `add_contrastive_loss` returns loss_a + loss_b, each a mean over B anchors). The gradients differ
    by that factor 2; LARS-adapted weights do not see it (the trust ratio normalises it away), but the
    parameters LARS excludes (biases, BN) and an optimizer without adaptation step half as far as in
    the official code at the same LR: double optimizer.lr for them to match it.
    """

    def __init__(self, temperature: float):  # no default here: conf/loss/nt_xent.yaml holds it
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"NT-Xent temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        z1 = F.normalize(z1.float(), dim=1)
        z2 = F.normalize(z2.float(), dim=1)
        local_batch = z1.shape[0]
        z_local = torch.cat([z1, z2])  # (2B, D)
        z_global = torch.cat([distributed.gather_with_grad(z1), distributed.gather_with_grad(z2)])
        global_batch = z_global.shape[0] // 2  # N

        logits = z_local @ z_global.T / self.temperature  # (2B, 2N)
        local_index = distributed.global_positions(local_batch, z1.device)
        self_index = torch.cat([local_index, local_index + global_batch])
        positive_index = torch.cat([local_index + global_batch, local_index])
        rows = torch.arange(2 * local_batch, device=z1.device)
        logits[rows, self_index] = float("-inf")
        return F.cross_entropy(logits, positive_index)
