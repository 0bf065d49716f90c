"""The colorization loss (Zhang et al. 2016): in-gamut ab classes, 5-nearest soft targets, class
rebalancing and annealed-mean decoding, each against a computation written out here."""

from __future__ import annotations

import math

import torch

from selfsup.data.pretext import rgb_to_lab
from selfsup.losses.colorization import ColorizationLoss


def test_classes_are_the_ab_bins_that_hold_srgb_colours():
    loss_fn = ColorizationLoss(kind="classification")
    centers = loss_fn.bin_centers
    assert loss_fn.num_outputs == len(centers) == 261
    assert (centers % 10 == 0).all()  # the paper's grid
    assert centers[:, 0].min() == -90 and centers[:, 0].max() == 100  # the paper's span
    assert centers[:, 1].min() == -110 and centers[:, 1].max() == 90
    rgb = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    ab = rgb_to_lab(rgb)[0, 1:].flatten(1).T
    nearest_distance = torch.cdist(ab, centers).min(dim=1).values
    assert nearest_distance.max() <= 5 * math.sqrt(2) + 1e-4  # every colour falls in a class


def test_classification_loss_equals_the_paper_formula():
    torch.manual_seed(0)
    loss_fn = ColorizationLoss(kind="classification", rebalance=0.5).train()
    ab = rgb_to_lab(torch.rand(2, 3, 4, 4))[:, 1:]
    logits = torch.randn(2, loss_fn.num_outputs, 4, 4)
    loss = loss_fn(logits, ab)

    centers = loss_fn.bin_centers
    pixels = ab.permute(0, 2, 3, 1).reshape(-1, 2)
    log_probs = torch.log_softmax(logits, dim=1).permute(0, 2, 3, 1).reshape(len(pixels), -1)
    counts = torch.zeros(len(centers))
    expected_terms, nearest_classes = [], []
    for pixel, log_p in zip(pixels, log_probs):
        distance = ((centers - pixel) ** 2).sum(1)
        five = distance.argsort()[:5]
        gauss = torch.exp(-distance[five] / (2 * 5.0**2))
        expected_terms.append(-(gauss / gauss.sum() * log_p[five]).sum())
        nearest_classes.append(int(five[0]))
        counts[five[0]] += 1
    assert torch.equal(loss_fn.bin_counts.float(), counts)
    weights = loss_fn.rebalancing_weights()
    expected = torch.stack([weights[c] * term for c, term in zip(nearest_classes, expected_terms)]).mean()
    torch.testing.assert_close(loss, expected)


def test_rebalancing_weighs_rare_colours_more_and_decoding_is_the_annealed_mean():
    loss_fn = ColorizationLoss(kind="classification").train()
    index = {tuple(c.tolist()): i for i, c in enumerate(loss_fn.bin_centers)}
    common, rare = torch.tensor([0.0, 0.0]), torch.tensor([40.0, -30.0])
    ab = common.view(1, 2, 1, 1).repeat(1, 1, 4, 4)
    ab[0, :, 0, 0] = rare  # 1 pixel in 16
    right = torch.full((1, loss_fn.num_outputs, 4, 4), -10.0)
    right[0, index[(0.0, 0.0)]] = 10.0
    right[0, index[(40.0, -30.0)], 0, 0], right[0, index[(0.0, 0.0)], 0, 0] = 10.0, -10.0
    wrong = torch.roll(right, shifts=7, dims=1)
    assert loss_fn(right, ab) < loss_fn(wrong, ab)
    weights = loss_fn.rebalancing_weights()
    assert weights[index[(40.0, -30.0)]] > 2 * weights[index[(0.0, 0.0)]]
    prior = loss_fn.bin_counts.float() / loss_fn.bin_counts.sum()
    assert weights[prior > 0].min() > 0
    decoded = loss_fn.decode(right)
    probs = torch.softmax(right[0, :, 1, 1] / 0.38, dim=0)
    torch.testing.assert_close(decoded[0, :, 1, 1], probs @ loss_fn.bin_centers)
    assert torch.allclose(decoded[0, :, 0, 0], rare, atol=0.5)
