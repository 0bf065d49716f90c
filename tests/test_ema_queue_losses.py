"""EMA targets, the MoCo queue and the InfoNCE / BYOL / Barlow Twins losses, each checked
against an independent (naive, loop-based or closed-form) computation."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.losses.barlow_twins import BarlowTwinsLoss
from selfsup.losses.byol import BYOLLoss
from selfsup.losses.info_nce import InfoNCELoss
from selfsup.methods import momentum
from selfsup.methods.queue import FeatureQueue, check_queue_divisible

from distributed_harness import check_loss_matches_global_batch


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))


# ---------------------------------------------------------------- EMA

def test_make_target_is_frozen_copy_and_gets_no_grad():
    torch.manual_seed(0)
    online = _net()
    online(torch.randn(8, 4)).sum().backward()          # online now has grads
    target = momentum.make_target(online)
    for (name, o), t in zip(online.named_parameters(), target.parameters()):
        assert t is not o and torch.equal(t, o), name
        assert not t.requires_grad and t.grad is None

    online.zero_grad()
    loss = online(torch.randn(8, 4)).sum() + target(torch.randn(8, 4)).sum()
    loss.backward()
    assert all(p.grad is not None for p in online.parameters())
    assert all(not p.requires_grad and p.grad is None for p in target.parameters())


def test_ema_update_matches_closed_form_for_params_and_buffers():
    torch.manual_seed(0)
    online = _net()
    target = momentum.make_target(online)
    # Make online and target differ: an optimiser-like perturbation of the weights and a
    # train-mode forward that moves BatchNorm's running statistics and step counter.
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    online.train()
    for _ in range(3):
        online(torch.randn(16, 4) * 3 + 1)
    bn_online, bn_target = online[1], target[1]
    assert not torch.allclose(bn_online.running_mean, bn_target.running_mean)
    assert int(bn_online.num_batches_tracked) == 3 and int(bn_target.num_batches_tracked) == 0

    m = 0.9
    before_t = {k: v.clone() for k, v in target.state_dict().items()}
    online_sd = {k: v.clone() for k, v in online.state_dict().items()}
    momentum.update(online, target, m)

    for key, t in target.state_dict().items():
        if t.is_floating_point():
            expected = m * before_t[key] + (1 - m) * online_sd[key]
            torch.testing.assert_close(t, expected, msg=key)
        else:
            assert torch.equal(t, online_sd[key]), key          # num_batches_tracked copied
    assert int(bn_target.num_batches_tracked) == 3
    assert all(not p.requires_grad for p in target.parameters())
    torch.testing.assert_close(online.state_dict(), online_sd)  # online untouched


def test_ema_update_extremes_and_validation():
    torch.manual_seed(0)
    online = _net()
    target = momentum.make_target(online)
    with torch.no_grad():
        for p in online.parameters():
            p.mul_(2).add_(1)
    frozen = {k: v.clone() for k, v in target.state_dict().items()}
    momentum.update(online, target, 1.0)
    torch.testing.assert_close(target.state_dict(), frozen)
    momentum.update(online, target, 0.0)
    torch.testing.assert_close(target.state_dict(), online.state_dict())
    with pytest.raises(ValueError):
        momentum.update(online, target, 1.5)
    with pytest.raises(ValueError, match="structure"):
        momentum.update(online, nn.Linear(4, 6), 0.5)


def test_cosine_momentum_schedule():
    base = 0.996
    assert momentum.cosine_momentum(base, 0, 100) == pytest.approx(base)
    assert momentum.cosine_momentum(base, 50, 100) == pytest.approx((1 + base) / 2)
    assert momentum.cosine_momentum(base, 25, 100) == pytest.approx(
        1 - (1 - base) * (math.cos(math.pi / 4) + 1) / 2)
    assert momentum.cosine_momentum(base, 100, 100) == pytest.approx(1.0)
    assert momentum.cosine_momentum(base, 250, 100) == pytest.approx(1.0)    # clamped
    values = [momentum.cosine_momentum(base, s, 100) for s in range(101)]
    assert all(a <= b for a, b in zip(values, values[1:]))
    with pytest.raises(ValueError):
        momentum.cosine_momentum(base, 0, 0)


# ---------------------------------------------------------------- queue

def test_queue_initialised_normalised_and_registered_as_buffers():
    q = FeatureQueue(8, 3)
    torch.testing.assert_close(q.queue.norm(dim=1), torch.ones(8))
    assert q.ptr.dtype == torch.long and q.ptr.dim() == 0 and int(q.ptr) == 0
    assert set(q.state_dict()) == {"queue", "ptr"}
    assert list(q.parameters()) == []


def test_queue_fifo_and_wrap_around():
    q = FeatureQueue(8, 2)
    initial = q.queue.clone()
    b1 = torch.arange(0, 8, dtype=torch.float32).view(4, 2)
    b2 = torch.arange(100, 108, dtype=torch.float32).view(4, 2)
    b3 = torch.arange(200, 208, dtype=torch.float32).view(4, 2)

    q.enqueue(b1)
    assert int(q.ptr) == 4
    assert torch.equal(q.queue, torch.cat([b1, initial[4:]]))
    q.enqueue(b2)
    assert int(q.ptr) == 0
    assert torch.equal(q.queue, torch.cat([b1, b2]))
    q.enqueue(b3)                                           # wraps: overwrites the oldest (b1)
    assert int(q.ptr) == 4
    assert torch.equal(q.queue, torch.cat([b3, b2]))


def test_queue_rejects_indivisible_and_misshaped_batches():
    q = FeatureQueue(10, 2)
    with pytest.raises(ValueError, match=r"K=10.*global batch size 4.*multiple of 4"):
        q.enqueue(torch.randn(4, 2))
    assert int(q.ptr) == 0
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        q.enqueue(torch.randn(5, 3))
    check_queue_divisible(65536, 256)
    with pytest.raises(ValueError, match="K=65536"):
        check_queue_divisible(65536, 384)


def test_queue_state_dict_round_trip():
    torch.manual_seed(0)
    q = FeatureQueue(8, 3)
    q.enqueue(F.normalize(torch.randn(4, 3), dim=1))
    fresh = FeatureQueue(8, 3)
    assert not torch.equal(fresh.queue, q.queue) and int(fresh.ptr) == 0
    fresh.load_state_dict(q.state_dict())
    assert torch.equal(fresh.queue, q.queue) and int(fresh.ptr) == 4
    # Continues exactly where the saved one left off.
    nxt = F.normalize(torch.randn(4, 3), dim=1)
    q.enqueue(nxt)
    fresh.enqueue(nxt)
    assert torch.equal(fresh.queue, q.queue) and int(fresh.ptr) == int(q.ptr) == 0


def test_enqueue_after_loss_does_not_break_backward():
    """Lightning calls backward after training_step returns, i.e. after the enqueue."""
    torch.manual_seed(0)
    q = FeatureQueue(8, 3)
    query = torch.randn(4, 3, requires_grad=True)
    key = F.normalize(torch.randn(4, 3), dim=1)
    negatives = q.negatives()
    loss = InfoNCELoss()(query, key, negatives)
    q.enqueue(key)
    loss.backward()
    assert query.grad is not None and torch.isfinite(query.grad).all()


# ---------------------------------------------------------------- InfoNCE

def test_info_nce_matches_naive_loop():
    torch.manual_seed(0)
    b, d, k, t = 5, 7, 11, 0.2
    query, key = torch.randn(b, d) * 3, torch.randn(b, d)
    queue = F.normalize(torch.randn(k, d), dim=1)

    total = 0.0
    for i in range(b):
        qi = query[i] / query[i].norm()
        ki = key[i] / key[i].norm()
        logits = [float(qi @ ki) / t] + [float(qi @ queue[j]) / t for j in range(k)]
        mx = max(logits)
        log_z = mx + math.log(sum(math.exp(x - mx) for x in logits))
        total += -(logits[0] - log_z)
    expected = total / b

    loss = InfoNCELoss(temperature=t)(query, key, queue)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert InfoNCELoss().temperature == 0.2


def test_info_nce_half_inputs_and_validation():
    torch.manual_seed(0)
    query, key = torch.randn(4, 8), torch.randn(4, 8)
    queue = F.normalize(torch.randn(16, 8), dim=1)
    full = InfoNCELoss()(query, key, queue)
    half = InfoNCELoss()(query.half(), key.half(), queue.half())
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(full.item(), rel=1e-2)
    with pytest.raises(ValueError):
        InfoNCELoss(temperature=0.0)


# ---------------------------------------------------------------- BYOL

def test_byol_loss_matches_formula_and_stops_gradient_to_target():
    torch.manual_seed(0)
    p = torch.randn(6, 5, requires_grad=True)
    z = torch.randn(6, 5, requires_grad=True)
    loss = BYOLLoss()(p, z)

    pv, zv = p.detach(), z.detach()
    expected = sum(2 - 2 * float(pv[i] @ zv[i]) / (float(pv[i].norm()) * float(zv[i].norm()))
                   for i in range(6)) / 6
    assert loss.item() == pytest.approx(expected, rel=1e-5)

    loss.backward()
    assert z.grad is None
    assert p.grad is not None and p.grad.abs().sum() > 0

    same = torch.randn(3, 5)
    assert BYOLLoss()(same, same * 4).item() == pytest.approx(0.0, abs=1e-6)
    assert BYOLLoss()(same, -same).item() == pytest.approx(4.0, abs=1e-5)


# ---------------------------------------------------------------- Barlow Twins

def _barlow_naive(z1, z2, lam, eps=1e-5):
    n, d = len(z1), len(z1[0])

    def standardise(z):
        cols = []
        for j in range(d):
            col = [z[i][j] for i in range(n)]
            mu = sum(col) / n
            var = sum((x - mu) ** 2 for x in col) / n
            cols.append([(x - mu) / math.sqrt(var + eps) for x in col])
        return cols                                          # cols[j][i]

    a, b = standardise(z1), standardise(z2)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c_ij = sum(a[i][s] * b[j][s] for s in range(n)) / n
            loss += (1 - c_ij) ** 2 if i == j else lam * c_ij ** 2
    return loss


def test_barlow_twins_matches_naive_double_loop():
    torch.manual_seed(0)
    z1 = torch.randn(8, 5) * 2 + 1
    z2 = torch.randn(8, 5) + 0.5 * z1
    for lam in (0.0051, 0.5):
        expected = _barlow_naive(z1.tolist(), z2.tolist(), lam)
        got = BarlowTwinsLoss(lambda_offdiag=lam)(z1, z2)
        assert got.dtype == torch.float32
        assert got.item() == pytest.approx(expected, rel=1e-5)
    assert BarlowTwinsLoss().lambda_offdiag == 0.0051


def test_barlow_twins_perfectly_standardised_identical_inputs():
    torch.manual_seed(0)
    n, d, eps = 8, 5, 1e-5
    a = torch.randn(n, d, dtype=torch.float64)
    q, _ = torch.linalg.qr(a - a.mean(dim=0))                # centred, orthonormal columns
    z = (q * math.sqrt(n)).float()                           # zero mean, unit (biased) variance, decorrelated
    loss = BarlowTwinsLoss()
    # C = I / (1 + eps): only the eps of the standardisation keeps the loss from being exactly 0.
    assert loss(z, z).item() == pytest.approx(d * (1 - 1 / (1 + eps)) ** 2, abs=1e-8)
    # Perfectly anti-correlated views: C = -I / (1 + eps), so each diagonal term is ~ (1 + 1)^2.
    assert loss(z, -z).item() == pytest.approx(d * (1 + 1 / (1 + eps)) ** 2, rel=1e-5)
    # Standardisation makes the loss invariant to per-dimension scale and shift.
    scale, shift = torch.rand(d) * 5 + 0.5, torch.randn(d) * 10
    assert loss(z * scale + shift, z).item() == pytest.approx(loss(z, z).item(), abs=1e-6)


def test_barlow_twins_identical_correlated_inputs_pay_only_off_diagonal():
    torch.manual_seed(0)
    z = torch.randn(32, 4)
    z[:, 1] = z[:, 0] + 0.1 * z[:, 1]                         # two redundant dimensions
    corr = torch.corrcoef(z.T.double())
    off = (corr.pow(2).sum() - corr.diagonal().pow(2).sum()).item()
    lam = 0.0051
    assert BarlowTwinsLoss(lam)(z, z).item() == pytest.approx(lam * off, rel=1e-3)


def test_barlow_twins_validation():
    with pytest.raises(ValueError):
        BarlowTwinsLoss(lambda_offdiag=-1.0)
    with pytest.raises(ValueError, match="at least 2"):
        BarlowTwinsLoss()(torch.randn(1, 3), torch.randn(1, 3))


def test_barlow_twins_two_ranks_match_global_batch():
    """Two gloo processes with half the batch each (under DDP) give the single-process loss and
    gradients w.r.t. inputs and parameters: statistics and C are over the global batch."""
    check_loss_matches_global_batch(BarlowTwinsLoss())
