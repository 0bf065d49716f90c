"""The one place that knows about ranks.

Losses and methods call these helpers at a single seam and stay agnostic of the world size:
on one process every function is the identity (or a no-op), so the same code runs on a laptop
and on 8 GPUs.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from all ranks along dim 0, letting gradients flow back to every rank.

    `torch.distributed.nn.all_gather`'s backward sums the incoming gradients over ranks, which
    together with DDP's gradient averaging yields exactly the gradient of the global-batch loss.
    """
    if not is_distributed():
        return x
    import torch.distributed.nn  # noqa: F401  (registers the autograd-aware collectives)

    return torch.cat(torch.distributed.nn.all_gather(x), dim=0)


@torch.no_grad()
def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from all ranks along dim 0 without gradient (e.g. MoCo keys, kNN features)."""
    if not is_distributed():
        return x
    out = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)
