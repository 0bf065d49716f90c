"""Weighted kNN classifier on L2-normalised features (Wu et al. 2018, InstDisc): the k nearest
training features by cosine similarity vote for their class with weight exp(sim / T)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.eval.accuracy import topk_accuracy


@torch.no_grad()
def knn_votes(
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
    chunks = []
    for chunk in F.normalize(test_features.float(), dim=1).split(chunk_size):
        similarity, index = (chunk @ train_features.T).topk(k, dim=1)
        weights = (similarity / temperature).exp()
        votes = torch.zeros(chunk.shape[0], num_classes, device=chunk.device)
        votes.scatter_add_(1, train_labels[index], weights)
        chunks.append(votes)
    return torch.cat(chunks)  # (N, num_classes): each class's summed weight


def knn_predict(*args, **kwargs) -> torch.Tensor:
    """The class with the most votes (`knn_votes`' arguments)."""
    return knn_votes(*args, **kwargs).argmax(dim=1)


def knn_accuracy(
    train_features, train_labels, test_features, test_labels, num_classes, k, temperature, top_k: int = 1
) -> float:
    """The fraction of test samples whose label is among the `top_k` classes with the most votes."""
    votes = knn_votes(train_features, train_labels, test_features, num_classes, k, temperature)
    return topk_accuracy(votes, test_labels, top_k)


def knn_top1(train_features, train_labels, test_features, test_labels, num_classes, k, temperature) -> float:
    return knn_accuracy(train_features, train_labels, test_features, test_labels, num_classes, k, temperature)
