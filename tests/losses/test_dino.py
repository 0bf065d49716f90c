"""The DINO loss against Algorithm 1 of the paper, its centre and teacher temperature, and 2 ranks against 1
process on the global batch."""

from __future__ import annotations

import math

import pytest
import torch
from distributed_harness import run_on_ranks

from selfsup.losses.dino import DINOLoss, pair_mask

pytestmark = pytest.mark.usefixtures("one_thread")


def _softmax(row, temperature):
    exps = [math.exp(x / temperature) for x in row]
    return [e / sum(exps) for e in exps]


def _dino_naive(student, teacher, center, student_temperature, teacher_temperature):
    """Caron et al. 2021, Algorithm 1: H(P_t, P_s) summed over pairs of different views, each averaged
    over the batch, divided by the number of pairs; P_t = softmax((t - c) / tau_t)."""
    total, pairs = 0.0, 0
    for t_index, t in enumerate(teacher):
        for s_index, s in enumerate(student):
            if s_index == t_index:
                continue
            batch = [
                -sum(
                    q * math.log(p)
                    for q, p in zip(
                        _softmax([a - c for a, c in zip(t_row, center)], teacher_temperature),
                        _softmax(s_row, student_temperature),
                    )
                )
                for t_row, s_row in zip(t.double().tolist(), s.double().tolist())
            ]
            total += sum(batch) / len(batch)
            pairs += 1
    return total / pairs


def test_pair_mask_skips_each_view_with_itself():
    assert pair_mask(2, 4).tolist() == [[False, True, True, True], [True, False, True, True]]
    assert pair_mask(1, 1).sum() == 0


def test_dino_loss_matches_algorithm_1_and_updates_the_center():
    torch.manual_seed(0)
    k = 7
    student = [torch.randn(4, k, requires_grad=True) for _ in range(5)]
    teacher = [torch.randn(4, k) for _ in range(2)]
    loss_fn = DINOLoss(k, student_temperature=0.1, center_momentum=0.9)
    loss_fn.center.copy_(torch.randn(1, k))
    center = loss_fn.center[0].tolist()
    loss, diagnostics = loss_fn(student, teacher, teacher_temperature=0.05)
    assert loss.item() == pytest.approx(_dino_naive(student, teacher, center, 0.1, 0.05), rel=1e-5)

    expected_center = [
        0.9 * c + 0.1 * sum(row[j] for t in teacher for row in t.tolist()) / 8 for j, c in enumerate(center)
    ]
    assert loss_fn.center[0].tolist() == pytest.approx(expected_center, rel=1e-5)

    entropies = [
        -sum(q * math.log(q) for q in _softmax([a - c for a, c in zip(row, center)], 0.05))
        for t in teacher
        for row in t.tolist()
    ]
    assert diagnostics["teacher_entropy"].item() == pytest.approx(sum(entropies) / len(entropies), rel=1e-4)
    # H(P_t, P_s) = h(P_t) + KL(P_t || P_s): the mean KL over the pairs is the loss minus the mean entropy
    assert diagnostics["kl"].item() == pytest.approx(loss.item() - diagnostics["teacher_entropy"].item(), rel=1e-4)

    loss.backward()
    assert all(s.grad.abs().sum() > 0 for s in student)
    assert not any(t.requires_grad for t in teacher)


def test_dino_teacher_temperature_warms_up_linearly_then_stays():
    loss_fn = DINOLoss(
        4, teacher_temperature=0.07, warmup_teacher_temperature=0.04, warmup_teacher_temperature_epochs=30
    )
    assert [loss_fn.teacher_temperature_at(e) for e in (0, 15, 29)] == pytest.approx([0.04, 0.055, 0.069], abs=1e-9)
    assert loss_fn.teacher_temperature_at(30) == loss_fn.teacher_temperature_at(300) == 0.07
    assert DINOLoss(4, warmup_teacher_temperature_epochs=0).teacher_temperature_at(0) == 0.07


def _dino_on_rank(rank, world_size, student, teacher):
    b = student[0].shape[0] // world_size
    rows = slice(rank * b, (rank + 1) * b)
    local = [s[rows].clone().requires_grad_(True) for s in student]
    loss_fn = DINOLoss(student[0].shape[1])
    loss, _ = loss_fn(local, [t[rows] for t in teacher], teacher_temperature=0.04)
    loss.backward()
    mean_loss = loss.detach().clone()
    torch.distributed.all_reduce(mean_loss)
    # DDP averages gradients over ranks: the local gradient / world size is the global-batch one.
    return mean_loss / world_size, [s.grad / world_size for s in local], loss_fn.center.clone()


def test_dino_two_ranks_match_global_batch():
    """Each rank's loss is over its local batch (DDP averages the gradients); the center is updated with
    the teacher mean of the global batch: 2 gloo ranks give one process's loss, gradients and center."""
    torch.manual_seed(0)
    student = [torch.randn(8, 6) for _ in range(4)]
    teacher = [torch.randn(8, 6) for _ in range(2)]
    reference = [s.clone().requires_grad_(True) for s in student]
    loss_fn = DINOLoss(6)
    ref_loss, _ = loss_fn(reference, teacher, teacher_temperature=0.04)
    ref_loss.backward()
    for rank, (loss, grads, center) in enumerate(run_on_ranks(_dino_on_rank, student, teacher)):
        torch.testing.assert_close(loss, ref_loss.detach(), rtol=1e-5, atol=1e-5)
        for got, want in zip(grads, reference):
            torch.testing.assert_close(got, want.grad[rank * 4 : (rank + 1) * 4], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(center, loss_fn.center, rtol=1e-5, atol=1e-6)
