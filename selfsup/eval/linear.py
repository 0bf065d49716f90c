"""Offline linear probe: multinomial logistic regression on frozen, cached features, fitted with
full-batch L-BFGS. The weight decay is picked on a held-out part of the training split, then the
probe is refitted on the whole split and scored once on the evaluation split."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def fit_logistic_regression(x, y, num_classes: int, weight_decay: float, max_iter: int) -> torch.nn.Linear:
    probe = torch.nn.Linear(x.shape[1], num_classes).to(x.device)
    optimizer = torch.optim.LBFGS(
        probe.parameters(), lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure():
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(probe(x), y) + 0.5 * weight_decay * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return probe


@torch.no_grad()
def _accuracy(probe, x, y) -> float:
    return (probe(x).argmax(dim=1) == y).float().mean().item()


def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    weight_decays=(0.0, 1e-5, 1e-4, 1e-3),
    max_iter: int = 200,
    holdout_fraction: float = 0.1,
    seed: int = 0,
) -> dict:
    mean, std = train_features.mean(0), train_features.std(0) + 1e-6
    train_x, test_x = (train_features - mean) / std, (test_features - mean) / std

    order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed))
    n_holdout = int(len(train_x) * holdout_fraction)
    holdout, fit = order[:n_holdout], order[n_holdout:]
    scores = {}
    for wd in weight_decays:
        if n_holdout == 0 or len(weight_decays) == 1:
            scores[wd] = 0.0
            continue
        probe = fit_logistic_regression(train_x[fit], train_labels[fit], num_classes, wd, max_iter)
        scores[wd] = _accuracy(probe, train_x[holdout], train_labels[holdout])
    best_wd = max(scores, key=scores.get)
    probe = fit_logistic_regression(train_x, train_labels, num_classes, best_wd, max_iter)
    return {
        "linear_top1": _accuracy(probe, test_x, test_labels),
        "linear_weight_decay": best_wd,
        "linear_holdout_top1": scores,
    }
