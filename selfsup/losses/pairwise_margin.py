"""Pairwise margin (contrastive) loss of Hadsell, Chopra & LeCun (2006)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup import distributed


class PairwiseMarginLoss(nn.Module):
    """Pull the two views of an image together (squared distance); push views of different images
    apart until they are `margin` away (squared hinge), beyond which they cost nothing.

    Rows are the local view-1 embeddings, columns the view-2 embeddings of the *global* batch
    (gathered with gradient), so over all ranks every cross-view pair is counted exactly once. The
    positive term is the mean over the B positive pairs, the negative term the mean over the B(N - 1)
    negative pairs, and the loss is their sum: averaging each term separately keeps the attraction /
    repulsion balance independent of the batch size. Embeddings are L2-normalised, so distances lie
    in [0, 2] and the default margin 1.0 asks negatives for cosine similarity <= 0.5.

    Hadsell et al.'s loss has a factor 1/2 on both terms, (1/2) D^2 and (1/2) max(0, m - D)^2; it is
    dropped here, so the loss and its gradients are twice the paper's at the same balance of terms.
    """

    def __init__(self, margin: float = 1.0):
        super().__init__()
        if margin <= 0:
            raise ValueError(f"pairwise margin must be > 0, got {margin}")
        self.margin = margin

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        z1 = F.normalize(z1.float(), dim=1)
        z2 = F.normalize(z2.float(), dim=1)
        local_batch = z1.shape[0]
        z2_global = distributed.gather_with_grad(z2)  # (N, D)

        squared_distance = (2 - 2 * z1 @ z2_global.T).clamp_min(0)  # (B, N), unit vectors
        rows = torch.arange(local_batch, device=z1.device)
        is_positive = torch.zeros_like(squared_distance, dtype=torch.bool)
        is_positive[rows, distributed.global_positions(local_batch, z1.device)] = True

        positive = squared_distance[is_positive].mean()
        distance = squared_distance[~is_positive].clamp_min(1e-12).sqrt()  # clamp: finite sqrt gradient at 0
        negative = F.relu(self.margin - distance).pow(2).mean()
        return positive + negative
