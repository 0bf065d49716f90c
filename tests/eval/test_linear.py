"""The linear probe's solvers agree."""

from __future__ import annotations

import torch


def test_sgd_linear_solver_agrees_with_lbfgs():
    from selfsup.eval.linear import linear_probe

    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 16, generator=g) * 3
    labels = torch.arange(400) % 4
    x = centers[labels] + torch.randn(400, 16, generator=g)
    kwargs = dict(weight_decays=[1e-4], holdout_fraction=0.0)
    lbfgs = linear_probe(x[:300], labels[:300], x[300:], labels[300:], 4, **kwargs)
    sgd = linear_probe(
        x[:300], labels[:300], x[300:], labels[300:], 4, solver="sgd", sgd_epochs=30, sgd_batch_size=64, **kwargs
    )
    assert lbfgs["linear_top1"] > 0.9 and abs(sgd["linear_top1"] - lbfgs["linear_top1"]) <= 0.03
    assert linear_probe(x[:300], labels[:300], x[300:], labels[300:], 4, **kwargs) == lbfgs  # deterministic
