"""A FIFO of past embeddings, kept in the checkpoint: MoCo's negative keys (He et al., 2020), NNCLR's
support set (Dwibedi et al., 2021), SwAV's queue of past projections (Caron et al., 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.errors import UserError


def check_queue_divisible(queue_size: int, global_batch: int) -> None:
    """Fail at start-up, not hours in: every enqueue writes one whole global batch, so the queue
    must hold an integer number of them for the FIFO to wrap exactly at its end."""
    if global_batch <= 0 or queue_size % global_batch != 0:
        raise ValueError(
            f"queue size K={queue_size} is not divisible by the global batch size "
            f"{global_batch} (per-device batch x number of devices); set the queue size to a "
            f"multiple of {global_batch}, or change the batch size / number of devices"
        )


def check_queue_config(
    key: str, size: int, batch: int, world_size: int, rows_per_image: int = 1, rows_note: str = ""
) -> None:
    """A method's queue rule for `check_config`, as one line naming the setting: `key` (the queue size
    `size`) > 0 and a multiple of the rows each step writes, `batch` x `world_size` x `rows_per_image`
    (`rows_note` says why there are several per image)."""
    if size <= 0:
        raise UserError(f"{key} must be > 0, got {size}")
    try:
        check_queue_divisible(size, batch * world_size * rows_per_image)
    except ValueError as err:
        raise UserError(f"{err} ({key}={size}, data.batch_size={batch} x {world_size} devices{rows_note})") from None


class FeatureQueue(nn.Module):
    """A FIFO of the last K keys, kept as buffers so that it and its write position are saved in
    and restored from state_dict / Lightning checkpoints (resuming would otherwise restart with a
    random queue).

    Under DDP every rank enqueues the same *global* batch of keys (the caller gathers them with
    `selfsup.distributed.gather`), so the queues stay identical across ranks.
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        if size <= 0 or dim <= 0:
            raise ValueError(f"queue size and dim must be > 0, got size={size}, dim={dim}")
        self.register_buffer("queue", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def negatives(self) -> torch.Tensor:
        """A snapshot of the queue to use as negatives: the loss's backward needs the values it
        was computed with, and `enqueue` overwrites the buffer in place before backward runs."""
        return self.queue.clone()

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write `keys` (the global batch, already L2-normalised, shape (N, dim)) at `ptr`, oldest first out."""
        size, dim = self.queue.shape
        batch = keys.shape[0]
        if keys.dim() != 2 or keys.shape[1] != dim:
            raise ValueError(f"keys must have shape (N, {dim}), got {tuple(keys.shape)}")
        check_queue_divisible(size, batch)
        # The write position stays on the device: `int(self.ptr)` would stall the host on the GPU
        # every step. Rows ptr..ptr+batch-1 (no wrap within a write: size is a multiple of batch).
        rows = self.ptr + torch.arange(batch, device=self.ptr.device)
        self.queue.index_copy_(0, rows, keys.detach().to(self.queue.dtype))
        self.ptr.add_(batch).remainder_(size)
