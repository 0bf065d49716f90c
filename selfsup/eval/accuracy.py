"""Top-k accuracy of class scores, through torchmetrics: the one definition every evaluation reports."""

from __future__ import annotations

import torch
from torchmetrics.functional.classification import multiclass_accuracy


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """The fraction of samples whose label is among their `k` highest scores (k capped at the class count)."""
    num_classes = scores.shape[1]
    return multiclass_accuracy(
        scores.float(), labels, num_classes=num_classes, top_k=min(k, num_classes), average="micro"
    ).item()
