"""The MoCo feature queue: FIFO order, wrap-around, checks, state round trip, and the global batch enqueued in
global order on 2 ranks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from distributed_harness import run_on_ranks

from selfsup import distributed
from selfsup.losses.info_nce import InfoNCELoss
from selfsup.methods.queue import FeatureQueue, check_queue_divisible


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
    q.enqueue(b3)  # wraps: overwrites the oldest (b1)
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


def _enqueue_on_rank(rank, world_size, keys, queue_size):
    torch.manual_seed(0)  # same initial queue on every rank (DDP broadcasts rank 0's buffers)
    queue = FeatureQueue(queue_size, keys.shape[1])
    b = keys.shape[0] // world_size
    queue.enqueue(distributed.gather(keys[rank * b : (rank + 1) * b]))
    return queue.queue.clone(), int(queue.ptr)


def test_queue_gets_the_global_batch_in_global_order_on_every_rank():
    torch.manual_seed(1)
    keys = F.normalize(torch.randn(8, 3), dim=1)  # 2 ranks x B=4
    (q0, ptr0), (q1, ptr1) = run_on_ranks(_enqueue_on_rank, keys, 16)
    assert torch.equal(q0, q1)
    assert torch.equal(q0[:8], keys) and ptr0 == ptr1 == 8
