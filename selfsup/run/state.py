"""What a checkpoint needs beyond what Lightning saves, and what it must never hold."""

from __future__ import annotations

import random

import numpy as np
import pytorch_lightning as pl
import torch

from selfsup.errors import NonFiniteError
from selfsup.methods.nonfinite import last_good_checkpoint


class RunState(pl.Callback):
    """Adds the RNG states to every checkpoint (Lightning saves weights, optimizer, scheduler and
    loop progress, not these) and restores them on resume; flushes the CSV log before each save;
    refuses to write non-finite weights over the last good checkpoint."""

    def __init__(self):
        self._rank = 0

    def setup(self, trainer, pl_module, stage) -> None:
        self._rank = trainer.global_rank

    def state_dict(self) -> dict:
        return {"rng": _collect_rng()}

    def load_state_dict(self, state_dict: dict) -> None:
        if "rng" in state_dict:
            _restore_rng(state_dict["rng"], self._rank)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        for logger in trainer.loggers:  # flush the metrics logged so far: a kill then loses no history
            if isinstance(logger, pl.loggers.CSVLogger):  # before the checkpoint (the CSV buffers 100 steps)
                logger.save()
        for name, value in checkpoint.get("state_dict", {}).items():
            if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
                raise NonFiniteError(
                    f"the weights became non-finite ({name}) by step {trainer.global_step}; nothing was saved over "
                    f"the last good checkpoint, {last_good_checkpoint(trainer)}: lower optimizer.lr or set "
                    "trainer.gradient_clip_val=1.0 and run again"
                )


def _collect_rng() -> dict:
    """Plain tensors, lists and numbers only, so that Lightning's weights_only=True load accepts them."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, python_state, python_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": [version, list(python_state), python_gauss],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict, rank: int) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, python_state, python_gauss = state["python"]
    random.setstate((version, tuple(python_state), python_gauss))
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except (RuntimeError, IndexError):  # resumed on a different number of GPUs
            pass
    if rank > 0:  # the checkpoint holds rank 0's states: give the other ranks streams of their own
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item()) + rank
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
