"""Weighted kNN classifier on L2-normalised features (Wu et al. 2018, InstDisc): the k nearest
training features by cosine similarity vote for their class with weight exp(sim / T)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> torch.Tensor:
    train_features = F.normalize(train_features.float(), dim=1)
    k = min(k, train_features.shape[0])
    predictions = []
    for chunk in F.normalize(test_features.float(), dim=1).split(chunk_size):
        similarity, index = (chunk @ train_features.T).topk(k, dim=1)
        weights = (similarity / temperature).exp()
        votes = torch.zeros(chunk.shape[0], num_classes, device=chunk.device)
        votes.scatter_add_(1, train_labels[index], weights)
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions)


def knn_top1(train_features, train_labels, test_features, test_labels, num_classes, k, temperature) -> float:
    pred = knn_predict(train_features, train_labels, test_features, num_classes, k, temperature)
    return (pred == test_labels).float().mean().item()
