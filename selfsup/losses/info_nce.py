"""InfoNCE with a queue of negatives, the MoCo loss (He et al., 2020; MoCo v2: Chen et al., 2020)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
        positive = (q * k).sum(dim=1, keepdim=True)                      # (B, 1)
        with torch.autocast(q.device.type, enabled=False):  # else mixed precision runs this in bf16/fp16
            negative = q @ queue.float().T                               # (B, K)
        logits = torch.cat([positive, negative], dim=1) / self.temperature
        labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        return F.cross_entropy(logits, labels)
