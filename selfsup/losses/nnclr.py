"""The NNCLR loss (Dwibedi et al. 2021, "With a Little Help from My Friends: Nearest-Neighbor Contrastive
Learning of Visual Representations"): NT-Xent whose positive for a view is the nearest neighbour of its
projection in a support set of past projections, contrasted against the other view's predictions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup import distributed


@torch.no_grad()
def nearest_neighbours(z: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """For each row of `z` (B, D), the row of `support` (Q, D, L2-normalised) with the highest cosine
    similarity to it. No gradient flows through the lookup (the paper's NN(z))."""
    return support[(F.normalize(z.float(), dim=1) @ support.float().T).argmax(dim=1)]


class NNCLRLoss(nn.Module):
    """L(NN(z1), p2) / 2 + L(NN(z2), p1) / 2, the paper's symmetric loss (Eq. 2 and Algorithm 1), with
    L(n, p) = mean_i -log softmax_j(cos(n_i, p_j) / temperature)[i]: the neighbour of view 1's projection
    of image i must pick out the prediction from view 2 of image i among the predictions of the *global*
    batch (all ranks, gathered with gradient; the local sample i at global position rank * B + i)."""

    def __init__(self, temperature: float = 0.1):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"NNCLR temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def contrast(self, neighbours: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
        predictions = F.normalize(predictions.float(), dim=1)
        logits = F.normalize(neighbours.float(), dim=1) @ distributed.gather_with_grad(predictions).T
        positives = distributed.global_positions(len(neighbours), neighbours.device)
        return F.cross_entropy(logits / self.temperature, positives)

    def forward(
        self,
        projections: tuple[torch.Tensor, torch.Tensor],
        predictions: tuple[torch.Tensor, torch.Tensor],
        support: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """projections z1, z2 and predictions p1, p2 (B, D) of the two views; `support` (Q, D) the
        L2-normalised support set. Returns the loss and the mean cosine of the projections to their
        neighbours (near 1: the support set holds the same images' neighbours, near 0: it is unrelated)."""
        neighbours = [nearest_neighbours(z, support) for z in projections]
        loss = (self.contrast(neighbours[0], predictions[1]) + self.contrast(neighbours[1], predictions[0])) / 2
        with torch.no_grad():
            similarity = torch.stack(
                [(F.normalize(z.float(), dim=1) * n.float()).sum(dim=1).mean() for z, n in zip(projections, neighbours)]
            ).mean()
        return loss, similarity
