"""Label fractions (selfsup/eval/subsets.py): exactly that share of every class, seeded."""

from __future__ import annotations

import torch


def test_label_fraction_takes_exactly_that_share_of_every_class_seeded():
    from selfsup.eval.subsets import class_balanced_indices

    labels = torch.arange(5).repeat_interleave(torch.tensor([100, 50, 30, 200, 10]))[torch.randperm(390)]
    chosen = class_balanced_indices(labels, 0.1, seed=3)
    assert torch.bincount(labels[chosen], minlength=5).tolist() == [10, 5, 3, 20, 1]
    assert torch.equal(chosen, class_balanced_indices(labels, 0.1, seed=3))  # seeded
    assert not torch.equal(chosen, class_balanced_indices(labels, 0.1, seed=4))  # and the seed matters
    assert len(chosen.unique()) == len(chosen)
