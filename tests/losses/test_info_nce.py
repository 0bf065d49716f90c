"""InfoNCE with a queue (MoCo v2) and MoCo v3's in-batch InfoNCE (selfsup/losses/info_nce.py) against naive and
hand computations, on 1 and 2 ranks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from distributed_harness import check_loss_matches_global_batch
from torch import nn

from selfsup.losses.info_nce import InfoNCELoss, MoCoV3Loss


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


# ------------------------------------------------------------------------------- MoCo v3
def test_mocov3_loss_matches_a_hand_computation():
    torch.manual_seed(0)
    q, k = torch.randn(6, 8, requires_grad=True), torch.randn(6, 8, requires_grad=True)
    tau = 0.2
    loss = MoCoV3Loss(temperature=tau)(q, k)
    qn, kn = F.normalize(q, dim=1), F.normalize(k, dim=1)
    terms = []
    for i in range(6):
        logits = torch.stack([qn[i] @ kn[j] for j in range(6)]) / tau
        terms.append(-(logits[i] - torch.logsumexp(logits, dim=0)))
    torch.testing.assert_close(loss, 2 * tau * torch.stack(terms).mean())
    loss.backward()
    assert k.grad is None  # keys are the momentum encoder's: stop-gradient


class _SymmetricMoCoV3(nn.Module):
    """The method's use of the loss: each view's query against the other view's keys."""

    def __init__(self):
        super().__init__()
        self.loss = MoCoV3Loss(temperature=0.2)

    def forward(self, z1, z2):
        return self.loss(z1, z2) + self.loss(z2, z1)


def test_mocov3_loss_on_two_ranks_matches_one_process_on_the_global_batch():
    check_loss_matches_global_batch(_SymmetricMoCoV3())
