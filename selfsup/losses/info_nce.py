"""InfoNCE, the MoCo losses: against a queue of negatives (He et al., 2020; MoCo v2: Chen et al., 2020)
and against the other keys of the global batch (MoCo v3: Chen, Xie & He, 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup import distributed


class InfoNCELoss(nn.Module):
    """Each query's positive is its own key (logit column 0); the K queued keys are negatives.

    `queue` is (K, D) and already L2-normalised (a `FeatureQueue.negatives()` snapshot); keys come
    from the momentum encoder and carry no gradient. Computed in float32 so that dividing by a
    small temperature under mixed precision does not overflow.
    """

    def __init__(self, temperature: float = 0.2):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"InfoNCE temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
        q = F.normalize(query.float(), dim=1)
        k = F.normalize(key.float(), dim=1)
        positive = (q * k).sum(dim=1, keepdim=True)  # (B, 1)
        with torch.autocast(q.device.type, enabled=False):  # else mixed precision runs this in bf16/fp16
            negative = q @ queue.float().T  # (B, K)
        logits = torch.cat([positive, negative], dim=1) / self.temperature
        labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        return F.cross_entropy(logits, labels)


class MoCoV3Loss(nn.Module):
    """MoCo v3's InfoNCE (Chen et al. 2021, Alg. 1): each local query against the keys of the whole
    global batch (all ranks), its positive the key of its own image, every other key a negative; no
    queue. Scaled by 2 x temperature, which keeps the gradient's size independent of the temperature.

    Unlike NT-Xent the negatives are keys only, never other queries. Keys come from the momentum
    encoder and are detached here (stop-gradient), so the plain all-gather suffices; the query of
    local sample i matches global key rank * B + i. Mean over the local batch: under DDP's gradient
    averaging this equals one process on the global batch. Computed in float32.
    """

    def __init__(self, temperature: float = 0.2):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"MoCo v3 temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        q = F.normalize(query.float(), dim=1)
        k = distributed.gather(F.normalize(key.detach().float(), dim=1))  # (N, D), rank order
        with torch.autocast(q.device.type, enabled=False):  # else mixed precision runs this in bf16/fp16
            logits = q @ k.T / self.temperature  # (B, N)
        labels = distributed.global_positions(len(q), q.device)
        return 2 * self.temperature * F.cross_entropy(logits, labels)
