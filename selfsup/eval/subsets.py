"""Low-shot evaluation (eval.label_fraction): a class-balanced, seeded subset of the labelled split,
as in the semi-supervised protocols of SimCLR / BYOL (1% and 10% of the ImageNet labels)."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


def class_balanced_indices(labels: torch.Tensor, fraction: float, seed: int = 0) -> torch.Tensor:
    """Sorted indices of round(fraction x n_c) samples (at least one) of every class c, drawn with `seed`."""
    labels = torch.as_tensor(labels).cpu()
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in labels.unique():
        members = (labels == label).nonzero().flatten()
        keep = max(1, round(fraction * len(members)))
        chosen.append(members[torch.randperm(len(members), generator=generator)[:keep]])
    return torch.cat(chosen).sort().values


def dataset_labels(dataset: Dataset) -> torch.Tensor:
    """The labels of a labelled split without decoding its images where the dataset lists them."""
    for name in ("targets", "labels"):  # ImageFolder, CIFAR, digits / STL-10
        if getattr(dataset, name, None) is not None:
            return torch.as_tensor(getattr(dataset, name))
    return torch.as_tensor([dataset[i][1] for i in range(len(dataset))])
