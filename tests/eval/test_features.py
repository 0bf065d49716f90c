"""Embedding a loader: features that are not finite stop the evaluation with one line naming them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from selfsup.errors import UserError
from selfsup.eval.features import extract_features


class Diverged(nn.Module):
    """A backbone whose output for the images in `broken` is NaN (weights gone non-finite for some inputs)."""

    def __init__(self, broken: set[int]):
        super().__init__()
        self.broken = broken

    def forward(self, images):
        features = images.flatten(1)[:, :4].clone()
        for row, index in enumerate(images[:, 0, 0, 0].long().tolist()):
            if index in self.broken:
                features[row, 1] = float("nan")
        return features


def _loader(count: int):
    images = torch.zeros(count, 3, 2, 2)
    images[:, 0, 0, 0] = torch.arange(count, dtype=torch.float32)  # each image carries its index
    return [(images[i : i + 4], torch.zeros(len(images[i : i + 4]), dtype=torch.long)) for i in range(0, count, 4)]


def test_finite_features_come_back_whole():
    features, labels = extract_features(Diverged(set()), _loader(10), "cpu")
    assert features.shape == (10, 4) and labels.shape == (10,) and torch.isfinite(features).all()


def test_non_finite_features_stop_with_one_line_naming_how_many():
    with pytest.raises(UserError) as raised:
        extract_features(Diverged({2, 7, 8}), _loader(10), "cpu", description="embedding val split")
    message = str(raised.value)
    assert "3 of 10 images" in message and "embedding val split" in message and "\n" not in message
