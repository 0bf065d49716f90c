"""Run code on N CPU processes joined in a gloo process group, as DDP's ranks would be.

`run_on_ranks(fn, *args)` calls `fn(rank, world_size, *args)` in every rank and returns the results
in rank order. `fn` must be a module-level function (it is pickled to the ranks). The ranks are
spawned once per test session and reused: starting a process that imports torch costs seconds, a
call costs milliseconds. `check_loss_matches_global_batch` is the shared check that a loss computed
on N ranks (per-rank batch B, under real DistributedDataParallel) has the loss and gradients of one
process on the concatenated N*B batch.
"""

from __future__ import annotations

import atexit
import io
import os
import queue
import tempfile
import traceback
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

CALL_TIMEOUT_S = 120


def _dumps(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)  # tensors by value: no shared-memory handles between processes
    return buffer.getvalue()


def _loads(data: bytes):
    return torch.load(io.BytesIO(data), weights_only=False)


def _serve(rank: int, world_size: int, init_file: str, tasks, results) -> None:
    torch.set_num_threads(1)  # one core per rank; more oversubscribes a small CI machine
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=CALL_TIMEOUT_S),
    )
    try:
        while (task := tasks.get()) is not None:
            try:
                fn, args = _loads(task)
                results.put((rank, True, _dumps(fn(rank, world_size, *args))))
            except BaseException:  # noqa: BLE001 - reported to the test, which fails with it
                results.put((rank, False, traceback.format_exc()))
    finally:
        dist.destroy_process_group()


class RankPool:
    """`world_size` processes in one gloo group (file:// rendezvous: no port can clash), serving calls."""

    def __init__(self, world_size: int):
        ctx = mp.get_context("spawn")
        self.world_size = world_size
        self._dir = tempfile.TemporaryDirectory()
        self._tasks = [ctx.Queue() for _ in range(world_size)]
        self._results = ctx.Queue()
        init_file = os.path.join(self._dir.name, "rendezvous")
        self._procs = [
            ctx.Process(target=_serve, args=(r, world_size, init_file, self._tasks[r], self._results), daemon=True)
            for r in range(world_size)
        ]
        for proc in self._procs:
            proc.start()

    def run(self, fn, args) -> list:
        task = _dumps((fn, args))
        for tasks in self._tasks:
            tasks.put(task)
        out, errors = {}, []
        for _ in range(self.world_size):
            try:
                rank, ok, value = self._results.get(timeout=CALL_TIMEOUT_S)
            except queue.Empty:
                errors.append(f"no answer within {CALL_TIMEOUT_S} s (a rank died or a collective hangs)")
                break
            if ok:
                out[rank] = _loads(value)
            else:
                errors.append(f"rank {rank}:\n{value}")
                break  # the other ranks may wait in a collective forever
        if errors:
            self.close()
            raise AssertionError(f"{fn.__name__} failed on the ranks:\n" + "\n".join(errors))
        return [out[r] for r in range(self.world_size)]

    @property
    def alive(self) -> bool:
        return all(p.is_alive() for p in self._procs)

    def close(self) -> None:
        for proc in self._procs:
            if proc.is_alive():
                proc.kill()
            proc.join()
        self._dir.cleanup()


_pools: dict[int, RankPool] = {}


@atexit.register
def _close_pools() -> None:
    for pool in _pools.values():
        pool.close()
    _pools.clear()


def run_on_ranks(fn, *args, world_size: int = 2) -> list:
    """`[fn(0, world_size, *args), ..., fn(world_size - 1, world_size, *args)]`, each in its rank."""
    pool = _pools.get(world_size)
    if pool is None or not pool.alive:
        pool = _pools[world_size] = RankPool(world_size)
    return pool.run(fn, args)


def _projector(dim_in: int, dim_out: int) -> nn.Module:
    torch.manual_seed(1)  # the same initial weights in every process, as DDP guarantees
    return nn.Sequential(nn.Linear(dim_in, 16), nn.ReLU(), nn.Linear(16, dim_out))


def _loss_on_rank(rank: int, world_size: int, loss_fn, x1: torch.Tensor, x2: torch.Tensor, dim_out: int):
    from torch.nn.parallel import DistributedDataParallel

    b = x1.shape[0] // world_size
    rows = slice(rank * b, (rank + 1) * b)
    l1, l2 = x1[rows].clone().requires_grad_(True), x2[rows].clone().requires_grad_(True)
    model = DistributedDataParallel(_projector(x1.shape[1], dim_out))  # averages parameter gradients
    z1, z2 = model(torch.cat([l1, l2])).chunk(2)
    loss = loss_fn(z1, z2)
    loss.backward()
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    # Inputs are not DDP parameters: their gradient sums the loss of every rank, so average it too.
    return (
        mean_loss / world_size,
        l1.grad / world_size,
        l2.grad / world_size,
        [p.grad for p in model.module.parameters()],
    )


def check_loss_matches_global_batch(
    loss_fn, world_size: int = 2, batch_per_rank: int = 4, dim_in: int = 6, dim_out: int = 5, tol: float = 1e-5
) -> None:
    """`loss_fn(z1, z2)` on `world_size` ranks equals one process on the concatenated batch: the
    loss (mean over ranks), the gradients w.r.t. every input row and the DDP-averaged gradients
    w.r.t. the projector's parameters, to `tol`."""
    torch.manual_seed(0)
    n = world_size * batch_per_rank
    x1, x2 = torch.randn(n, dim_in), torch.randn(n, dim_in)
    r1, r2 = x1.clone().requires_grad_(True), x2.clone().requires_grad_(True)
    reference = _projector(dim_in, dim_out)
    z1, z2 = reference(torch.cat([r1, r2])).chunk(2)
    ref_loss = loss_fn(z1, z2)
    ref_loss.backward()

    results = run_on_ranks(_loss_on_rank, loss_fn, x1, x2, dim_out, world_size=world_size)
    close = dict(rtol=tol, atol=tol)
    for rank, (loss, g1, g2, param_grads) in enumerate(results):
        rows = slice(rank * batch_per_rank, (rank + 1) * batch_per_rank)
        torch.testing.assert_close(loss, ref_loss.detach(), **close)
        torch.testing.assert_close(g1, r1.grad[rows], **close)
        torch.testing.assert_close(g2, r2.grad[rows], **close)
        for got, want in zip(param_grads, (p.grad for p in reference.parameters()), strict=True):
            torch.testing.assert_close(got, want, **close)
