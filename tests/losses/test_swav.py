"""The SwAV loss against the paper's formulation (Caron et al. 2020, Sec. 3.1 and App. A.1): Sinkhorn codes
as the matrix scaling Diag(u) exp(C^T Z / eps) Diag(v) with its marginals, the swapped prediction written as
loops; and 2 ranks against 1 process on the global batch (codes, loss, gradients)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from distributed_harness import check_loss_matches_global_batch, run_on_ranks
from torch import nn

from selfsup.losses.swav import SwAVLoss, sinkhorn_knopp

pytestmark = pytest.mark.usefixtures("one_thread")


def _codes_by_scaling(scores: np.ndarray, epsilon: float, iterations: int) -> np.ndarray:
    """The paper's Q* = Diag(u) P Diag(v), P = exp(C^T Z / eps) (K x B), from the alternating updates
    u = r / (P v), v = c / (P^T u) with r = 1/K, c = 1/B (Cuturi 2013), v starting at 1 / sum(P); returned
    as codes (B x K) scaled by B so that each sample's code is a distribution. Float64, no overflow guard."""
    p = np.exp(scores.T.astype(np.float64) / epsilon)
    prototypes, samples = p.shape
    v = np.full(samples, 1.0 / p.sum())
    for _ in range(iterations):
        u = (1.0 / prototypes) / (p @ v)
        v = (1.0 / samples) / (p.T @ u)
    return (u[:, None] * p * v[None, :]).T * samples


def _cosine_scores(batch: int, prototypes: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    z = nn.functional.normalize(torch.randn(batch, 16, generator=generator), dim=1)
    c = nn.functional.normalize(torch.randn(prototypes, 16, generator=generator), dim=1)
    return z @ c.T


@pytest.mark.parametrize("epsilon, iterations", [(0.05, 3), (0.05, 1), (0.3, 10)])
def test_sinkhorn_codes_are_the_papers_matrix_scaling(epsilon, iterations):
    scores = _cosine_scores(12, 7)
    codes = sinkhorn_knopp(scores, epsilon, iterations)
    np.testing.assert_allclose(
        codes.numpy(), _codes_by_scaling(scores.numpy(), epsilon, iterations), rtol=1e-4, atol=1e-7
    )


def test_sinkhorn_marginals_each_code_sums_to_1_and_prototypes_share_the_batch_equally():
    scores = _cosine_scores(24, 6)
    codes = sinkhorn_knopp(scores, 0.05, 3)
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(24))  # Q^T 1_K = 1_B / B, times B: exact
    # Q 1_B = 1_K / K, times B: each prototype gets B/K of the mass, approached with every iteration,
    # reached once they converge; the plain softmax over prototypes (no equipartition) is far from it.
    error = [(sinkhorn_knopp(scores, 0.05, n).sum(dim=0) - 24 / 6).abs().max().item() for n in (3, 10, 100)]
    softmax = (torch.softmax(scores / 0.05, dim=1).sum(dim=0) - 24 / 6).abs().max().item()
    assert softmax > error[0] > error[1] > error[2] and error[2] < 1e-4, (softmax, error)


def test_sinkhorn_does_not_overflow_at_a_small_epsilon():
    scores = _cosine_scores(10, 5)
    assert torch.isinf(torch.exp(torch.tensor(1.0 / 0.005)))  # exp(score / eps) of a cosine near 1, in fp32
    codes = sinkhorn_knopp(scores, 0.005, 3)
    assert torch.isfinite(codes).all()
    np.testing.assert_allclose(codes.numpy(), _codes_by_scaling(scores.numpy(), 0.005, 3), rtol=1e-3, atol=1e-6)


def _swapped_prediction_by_loops(scores, global_views, temperature, epsilon, iterations, queued=None):
    """Caron et al. 2020, Eq. 1 and 3 over multi-crop: for each global view s and every other view t,
    -1/B sum_i sum_k q_s[i, k] log softmax(z_t[i] / tau)[k]; averaged over the (s, t) pairs."""
    total, pairs = 0.0, 0
    for s in range(global_views):
        problem = scores[s].detach().numpy()
        if queued is not None:
            problem = np.concatenate([queued[s].numpy(), problem])
        codes = _codes_by_scaling(problem, epsilon, iterations)[-len(scores[s]) :]
        for t, z in enumerate(scores):
            if t == s:
                continue
            terms = []
            for i, row in enumerate(z.detach().double().tolist()):
                log_norm = math.log(sum(math.exp(x / temperature) for x in row))
                terms.append(-sum(q * (x / temperature - log_norm) for q, x in zip(codes[i], row)))
            total += sum(terms) / len(terms)
            pairs += 1
    return total / pairs


@pytest.mark.parametrize("with_queue", [False, True])
def test_swav_loss_is_the_swapped_prediction_over_multi_crop(with_queue):
    scores = [_cosine_scores(6, 5, seed=view) for view in range(5)]  # 2 global + 3 local views
    queued = [_cosine_scores(12, 5, seed=10 + view) for view in range(2)] if with_queue else None
    loss = SwAVLoss(temperature=0.1, epsilon=0.05, sinkhorn_iterations=3)(scores, 2, queued)
    assert loss.item() == pytest.approx(_swapped_prediction_by_loops(scores, 2, 0.1, 0.05, 3, queued), rel=1e-5)
    if with_queue:  # the queue changes the codes, hence the loss
        assert loss.item() != pytest.approx(SwAVLoss()(scores, 2).item(), rel=1e-3)


def test_codes_carry_no_gradient():
    """Only the predictions are differentiated: the gradient is that of the loss with the codes as constants."""
    scores = [_cosine_scores(6, 5, seed=view).requires_grad_(True) for view in range(3)]
    loss_fn = SwAVLoss()
    loss_fn(scores, 2).backward()
    codes = [loss_fn.codes(s) for s in scores[:2]]
    constants = [s.detach().clone().requires_grad_(True) for s in scores]
    log_p = [torch.log_softmax(s / 0.1, dim=1) for s in constants]
    pairs = [-(codes[s] * log_p[t]).sum(1).mean() for s in range(2) for t in range(3) if t != s]
    torch.stack(pairs).mean().backward()
    for got, want in zip(scores, constants):
        torch.testing.assert_close(got.grad, want.grad)


def test_swav_loss_rejects_bad_settings_and_view_counts():
    for kwargs in ({"temperature": 0}, {"epsilon": -1}, {"sinkhorn_iterations": 0}):
        with pytest.raises(ValueError):
            SwAVLoss(**kwargs)
    for views, global_views in ((1, 1), (3, 0), (3, 4)):
        with pytest.raises(ValueError, match="2 views or more, at least one global"):
            SwAVLoss()([torch.randn(4, 3)] * views, global_views)


# ---------------------------------------------------------------- 2 ranks == 1 process


def _sinkhorn_and_loss_on_rank(rank, world_size, scores, queued):
    batch, share = len(scores[0]) // world_size, len(queued[0]) // world_size
    local = [s[rank * batch : (rank + 1) * batch].clone().requires_grad_(True) for s in scores]
    local_queue = [q[rank * share : (rank + 1) * share] for q in queued]  # each rank adds its share of the queue
    codes = sinkhorn_knopp(torch.cat([local_queue[0], local[0].detach()]), 0.05, 3)
    loss = SwAVLoss()(local, 2, local_queue)
    loss.backward()
    mean_loss = loss.detach().clone()
    torch.distributed.all_reduce(mean_loss)
    return codes, mean_loss / world_size, [s.grad / world_size for s in local]


def test_two_ranks_solve_one_sinkhorn_problem_over_the_global_batch_and_queue():
    scores = [_cosine_scores(8, 5, seed=view) for view in range(4)]
    queued = [_cosine_scores(6, 5, seed=10 + view) for view in range(2)]
    reference = [s.clone().requires_grad_(True) for s in scores]
    ref_codes = sinkhorn_knopp(torch.cat([queued[0], scores[0]]), 0.05, 3)
    ref_loss = SwAVLoss()(reference, 2, queued)
    ref_loss.backward()
    for rank, (codes, loss, grads) in enumerate(run_on_ranks(_sinkhorn_and_loss_on_rank, scores, queued)):
        rows = torch.cat([torch.arange(rank * 3, rank * 3 + 3), 6 + torch.arange(rank * 4, rank * 4 + 4)])
        torch.testing.assert_close(codes, ref_codes[rows], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(loss, ref_loss.detach(), rtol=1e-5, atol=1e-5)
        for got, want in zip(grads, reference):
            torch.testing.assert_close(got, want.grad[rank * 4 : (rank + 1) * 4], rtol=1e-5, atol=1e-6)
    # The check has teeth: codes of one rank's half alone differ from the global problem's.
    assert not torch.allclose(sinkhorn_knopp(scores[0][:4], 0.05, 3), ref_codes[6:10], atol=1e-3)


class _TwoViewSwAV(nn.Module):
    """The loss on two global views of the harness's projector outputs, read as prototype scores."""

    def forward(self, z1, z2):
        return SwAVLoss(temperature=0.5, epsilon=0.5)([z1, z2], 2)


def test_swav_loss_under_ddp_matches_one_process_through_a_projector():
    check_loss_matches_global_batch(_TwoViewSwAV())
