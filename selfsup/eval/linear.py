"""Offline linear probe: multinomial logistic regression on frozen, cached features.

Two solvers of the same objective (cross-entropy + 0.5 * wd * ||W||^2 on standardised features):
full-batch L-BFGS (default: exact and fast up to ~10^5 x 2048 features) and mini-batch SGD with
momentum and a cosine LR (`solver: sgd`, for feature sets too large for full-batch steps). The
weight decay is picked on a held-out part of the training split, then the probe is refitted on
the whole split and scored once on the evaluation split. Probes start from zero and the holdout
split is seeded, so the same features give the same score in train.py and eval.py."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from selfsup.eval.accuracy import topk_accuracy

SOLVERS = ("lbfgs", "sgd")


def _zero_probe(dim: int, num_classes: int, device) -> torch.nn.Linear:
    probe = torch.nn.Linear(dim, num_classes).to(device)
    torch.nn.init.zeros_(probe.weight)
    torch.nn.init.zeros_(probe.bias)
    return probe


def fit_logistic_regression(x, y, num_classes: int, weight_decay: float, max_iter: int) -> torch.nn.Linear:
    probe = _zero_probe(x.shape[1], num_classes, x.device)
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


def fit_logistic_regression_sgd(
    x, y, num_classes: int, weight_decay: float, epochs: int, lr: float, batch_size: int, seed: int = 0
) -> torch.nn.Linear:
    probe = _zero_probe(x.shape[1], num_classes, x.device)
    optimizer = torch.optim.SGD(probe.parameters(), lr=lr, momentum=0.9)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * steps_per_epoch))
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for index in torch.randperm(len(x), generator=generator).to(x.device).split(batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(probe(x[index]), y[index]) + 0.5 * weight_decay * probe.weight.pow(2).sum()
            loss.backward()
            optimizer.step()
            schedule.step()
    return probe


@torch.no_grad()
def _accuracy(probe, x, y, k: int = 1) -> float:
    return topk_accuracy(probe(x), y, k)


def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    weight_decays=(0.0, 1e-5, 1e-4, 1e-3),
    max_iter: int = 200,
    holdout_fraction: float = 0.1,
    solver: str = "lbfgs",
    sgd_epochs: int = 100,
    sgd_lr: float = 0.1,
    sgd_batch_size: int = 1024,
    seed: int = 0,
) -> dict:
    if solver not in SOLVERS:
        from selfsup.errors import UserError

        raise UserError(f"eval.linear.solver={solver!r} is not one of {', '.join(SOLVERS)}")

    def fit(x, y, wd):
        if solver == "sgd":
            return fit_logistic_regression_sgd(x, y, num_classes, wd, sgd_epochs, sgd_lr, sgd_batch_size, seed)
        return fit_logistic_regression(x, y, num_classes, wd, max_iter)

    mean, std = train_features.mean(0), train_features.std(0) + 1e-6
    train_x, test_x = (train_features - mean) / std, (test_features - mean) / std

    order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed)).to(train_x.device)
    n_holdout = int(len(train_x) * holdout_fraction)
    holdout, rest = order[:n_holdout], order[n_holdout:]
    scores = {}
    for wd in weight_decays:
        if n_holdout == 0 or len(weight_decays) == 1:
            scores[wd] = 0.0
            continue
        probe = fit(train_x[rest], train_labels[rest], wd)
        scores[wd] = _accuracy(probe, train_x[holdout], train_labels[holdout])
    best_wd = max(scores, key=scores.get)
    probe = fit(train_x, train_labels, best_wd)
    return {
        "linear_top1": _accuracy(probe, test_x, test_labels),
        "linear_top5": _accuracy(probe, test_x, test_labels, 5),
        # not the papers' protocol (eval=linear_standard): a probe on cached augmentation-free features
        "linear_protocol": f"probe_{solver}",
        "linear_weight_decay": best_wd,
        "linear_solver": solver,
        "linear_holdout_top1": scores,
    }
