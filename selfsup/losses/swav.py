"""The SwAV loss (Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster
Assignments"): codes from the Sinkhorn-Knopp algorithm on the global views' prototype scores, predicted
from every other view (swapped prediction)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup import distributed


@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """Soft codes (n, K) for this rank's n samples, from their prototype scores (n, K): the paper's
    Q = Diag(u) exp(C^T Z / epsilon) Diag(v), the samples of ALL ranks forming one problem (every sum over
    samples is all-reduced). Each iteration scales every prototype's total mass to 1/K, then every sample's
    to 1/B (B samples over all ranks); the result is times B, so each sample's code sums to 1 and, as the
    iterations converge, each prototype receives B/K of the mass (the equipartition constraint)."""
    with torch.autocast(scores.device.type, enabled=False):
        scores = scores.float()
        # exp(x - max) / sum is exp(x) / sum: a shift common to all ranks changes nothing but the overflow
        codes = torch.exp((scores - distributed.all_reduce(scores.max(), "max")) / epsilon)
        prototypes = codes.shape[1]
        samples = distributed.all_reduce(torch.tensor(float(codes.shape[0]), device=codes.device))
        codes /= distributed.all_reduce(codes.sum())
        for _ in range(iterations):
            codes /= distributed.all_reduce(codes.sum(dim=0, keepdim=True)) * prototypes
            codes /= codes.sum(dim=1, keepdim=True) * samples
        return codes * samples


class SwAVLoss(nn.Module):
    """For each global view s: its codes q_s = `sinkhorn_knopp` of its scores (joined by the queue's, when
    given), and the cross-entropy -sum_k q_s log softmax(z_t / temperature) averaged over the batch, for every
    other view t (local views too); the mean over the (s, t) pairs. The codes carry no gradient."""

    def __init__(self, temperature: float = 0.1, epsilon: float = 0.05, sinkhorn_iterations: int = 3):
        super().__init__()
        if temperature <= 0 or epsilon <= 0:
            raise ValueError(f"SwAV temperature and epsilon must be > 0, got {temperature} and {epsilon}")
        if sinkhorn_iterations < 1:
            raise ValueError(f"SwAV needs at least one Sinkhorn iteration, got {sinkhorn_iterations}")
        self.temperature = temperature
        self.epsilon = epsilon
        self.sinkhorn_iterations = sinkhorn_iterations

    def codes(self, scores: torch.Tensor, queued: torch.Tensor | None = None) -> torch.Tensor:
        """The codes of `scores` (B, K), solved together with `queued` (M, K), the scores of this rank's share
        of the queue of past projections: more samples to spread over the K prototypes (a small batch)."""
        problem = scores.detach() if queued is None else torch.cat([queued.detach(), scores.detach()])
        return sinkhorn_knopp(problem, self.epsilon, self.sinkhorn_iterations)[-len(scores) :]

    def forward(
        self, scores: list[torch.Tensor], global_views: int, queued: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """scores: per view, (B, K) cosine similarities of its L2-normalised projections to the unit
        prototypes, the `global_views` first; queued: per global view, (M, K) scores of this rank's share of
        its queue (or None)."""
        if len(scores) < 2 or not 1 <= global_views <= len(scores):
            raise ValueError(
                f"SwAV needs 2 views or more, at least one global, got {global_views} global of {len(scores)}"
            )
        log_predictions = [F.log_softmax(s.float() / self.temperature, dim=1) for s in scores]
        losses = []
        for s in range(global_views):
            codes = self.codes(scores[s], None if queued is None else queued[s])
            losses += [-(codes * log_predictions[t]).sum(dim=1).mean() for t in range(len(scores)) if t != s]
        return torch.stack(losses).mean()
