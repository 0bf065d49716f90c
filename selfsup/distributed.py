"""The one place that knows about ranks.

Losses and methods call these helpers at a single seam and stay agnostic of the world size:
on one process every function is the identity (or a no-op; `batch_shuffle` permutes the local
batch, which `batch_unshuffle` undoes), so the same code runs on a laptop and on 8 GPUs.
`SplitBatchNorm` emulates per-device BatchNorm of several devices on one (single-device ShuffleBN).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def global_positions(local_batch: int, device=None) -> torch.Tensor:
    """Where this rank's samples sit in the batch gathered from all ranks (rank order, the same
    local batch B on every rank): local sample i at global position rank * B + i."""
    return torch.arange(local_batch, device=device) + rank() * local_batch


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward returns to each rank the sum, over ranks, of the gradients that
    reached its slice: with DDP averaging the parameter gradients, exactly the global-batch gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(out, x.contiguous())
        ctx.local_size = x.shape[0]
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)  # all_reduce is in place
        dist.all_reduce(grad)
        return grad.narrow(0, rank() * ctx.local_size, ctx.local_size)


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` (the same shape on every rank) from all ranks along dim 0, in rank order,
    letting gradients flow back to every rank's own slice."""
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from all ranks along dim 0 without gradient (e.g. MoCo keys, kNN features)."""
    if not is_distributed():
        return x
    out = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


@torch.no_grad()
def all_reduce(x: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """`x` summed (op="sum") or maximised (op="max") element-wise over all ranks, as a new tensor,
    without gradient (e.g. SwAV's Sinkhorn marginals over the global batch); `x` on one process."""
    if not is_distributed():
        return x
    out = x.clone()
    dist.all_reduce(out, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return out


def gather_object(obj) -> list:
    """`obj` (any picklable value) from every rank, in rank order; `[obj]` on one process."""
    if not is_distributed():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


# --- ShuffleBN (MoCo, He et al. 2020, Sec. 3.3) ------------------------------------------------
@torch.no_grad()
def batch_shuffle(x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle the *global* batch across ranks: official MoCo's `_batch_shuffle_ddp`.

    Gathers `x` from all ranks, draws a permutation of the global batch on rank 0 and broadcasts it,
    and returns this rank's share of the shuffled global batch together with the index that undoes
    the shuffle (pass it to `batch_unshuffle`). On one process the permutation is local, so with
    `SplitBatchNorm` the keys still land in different BatchNorm groups than their queries.
    All ranks must have the same local batch size.
    """
    x_all = gather(x)
    shuffle = torch.randperm(x_all.shape[0], generator=generator).to(x.device)
    if is_distributed():
        dist.broadcast(shuffle, src=0)
    unshuffle = torch.argsort(shuffle)
    share = shuffle.view(world_size(), -1)[rank()]
    return x_all[share], unshuffle


@torch.no_grad()
def batch_unshuffle(x: torch.Tensor, unshuffle: torch.Tensor) -> torch.Tensor:
    """Undo `batch_shuffle` on its output (e.g. the keys): official MoCo's `_batch_unshuffle_ddp`.
    Gathers the shuffled shares of all ranks and returns this rank's rows in the original order."""
    x_all = gather(x)
    return x_all[unshuffle.view(world_size(), -1)[rank()]]


class SplitBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose batch statistics are computed over `num_splits` contiguous groups of the
    batch: on one device it behaves like plain BatchNorm on `num_splits` devices without SyncBN,
    each holding one group (lightly's SplitBatchNorm idea, with contiguous groups so group g is
    exactly the share rank g would hold). Used to give single-device MoCo the ShuffleBN defence.

    Eval mode uses the running statistics like BatchNorm; in training they are updated with the
    mean over groups of the group statistics. Parameters and buffers are BatchNorm's, so state
    dicts load into plain BatchNorm and back.
    """

    def __init__(
        self,
        num_features: int,
        num_splits: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        if num_splits < 1:
            raise ValueError(f"num_splits must be >= 1, got {num_splits}")
        self.num_splits = num_splits

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (N, C, ...), got {x.dim()}D")

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_splits={self.num_splits}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        uses_batch_stats = self.training or not self.track_running_stats
        if self.num_splits == 1 or not uses_batch_stats:
            return super().forward(x)
        self._check_input_dim(x)
        if x.shape[0] % self.num_splits:
            raise ValueError(f"SplitBatchNorm: batch of {x.shape[0]} is not divisible into {self.num_splits} groups")
        update = self.training and self.track_running_stats
        factor = 0.0
        if update:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        outputs, means, variances = [], [], []
        for chunk in x.chunk(self.num_splits):
            mean = self.running_mean.clone() if update else None
            var = self.running_var.clone() if update else None
            outputs.append(F.batch_norm(chunk, mean, var, self.weight, self.bias, True, factor, self.eps))
            means.append(mean)
            variances.append(var)
        if update:  # linear in the group statistics: the mean over groups of each group's update
            with torch.no_grad():
                self.running_mean.copy_(torch.stack(means).mean(0))
                self.running_var.copy_(torch.stack(variances).mean(0))
        return torch.cat(outputs)


def convert_split_batchnorm(module: nn.Module, num_splits: int) -> nn.Module:
    """Replace every BatchNorm (1d/2d/3d, not SyncBatchNorm) in `module` by a `SplitBatchNorm`
    with the same parameters and statistics, in place; returns the (possibly new) root module."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, (SplitBatchNorm, nn.SyncBatchNorm)
    ):
        reference = next(iter(module.state_dict().values()), None)
        split = SplitBatchNorm(
            module.num_features, num_splits, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if reference is not None:
            split.to(reference.device)
        split.load_state_dict(module.state_dict())  # weight, bias, running statistics, counter
        for name, param in module.named_parameters(recurse=False):
            getattr(split, name).requires_grad_(param.requires_grad)  # a frozen EMA target stays frozen
        split.train(module.training)
        return split
    for name, child in module.named_children():
        converted = convert_split_batchnorm(child, num_splits)
        if converted is not child:
            setattr(module, name, converted)
    return module
