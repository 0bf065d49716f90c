"""The non-finite loss guard of `SSLMethod.training_step`: a NaN/inf loss stops the run naming the step
and the loss terms, before the weights change and with nothing saved after the fault
(`on_nonfinite=stop`), or skips the batch (`on_nonfinite=skip`)."""

from __future__ import annotations

from typing import Optional

import torch
from pytorch_lightning.utilities import rank_zero_warn

from selfsup import distributed
from selfsup.errors import NonFiniteError

MAX_CONSECUTIVE_SKIPS = 20  # on_nonfinite=skip: more non-finite losses in a row than this stops the run


def guard_loss(module, loss: torch.Tensor, terms: dict) -> Optional[torch.Tensor]:
    """`loss` when it is finite; otherwise stop (on_nonfinite=stop, raises NonFiniteError) or
    return what skips the batch (None; under DDP, where Lightning cannot skip, a zero-gradient
    loss). `terms` are the loss's named parts for the message. Costs one host sync per step."""
    cfg, trainer = module.cfg, module.trainer
    step = trainer.global_step
    if cfg.get("inject_nan_at_step") is not None and step == cfg.inject_nan_at_step:  # test hook
        loss = loss * float("nan")
        terms = {**terms, "loss": terms.get("loss", loss) * float("nan")}
    bad = (~torch.isfinite(loss.detach())).any().to(torch.int32)
    if distributed.is_distributed():  # every rank must take the same branch or DDP hangs
        torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
    skips = module.__dict__.setdefault("_nonfinite_skips", {"total": 0, "in_a_row": 0})
    if not bad.item():
        skips["in_a_row"] = 0
        return loss
    values = ", ".join(f"{name}={_scalar(value)}" for name, value in terms.items())
    where = f"non-finite loss at step {step} (epoch {trainer.current_epoch}): {values}"
    skips["total"] += 1
    skips["in_a_row"] += 1
    if cfg.get("on_nonfinite", "stop") != "skip" or skips["in_a_row"] > MAX_CONSECUTIVE_SKIPS:
        many = f" ({skips['in_a_row']} in a row)" if skips["in_a_row"] > 1 else ""
        raise NonFiniteError(
            f"{where}{many}; stopped before the weights changed, nothing saved after it; the last good checkpoint "
            f"is {last_good_checkpoint(trainer)}: continue from it with ckpt_path=<it> trainer.gradient_clip_val=1.0, "
            "or start afresh with a lower optimizer.lr, or set on_nonfinite=skip to skip such batches"
        )
    rank_zero_warn(f"{where}; skipping this batch (on_nonfinite=skip, {skips['total']} skipped so far)")
    if distributed.is_distributed():
        return sum((p * 0.0).sum() for p in module.parameters() if p.requires_grad)
    return None


def skipped_batches(module) -> int:
    """How many batches `guard_loss` skipped in this process (on_nonfinite=skip)."""
    return module.__dict__.get("_nonfinite_skips", {}).get("total", 0)


def last_good_checkpoint(trainer) -> str:
    """The newest checkpoint this run has written, for messages about a fault after it."""
    for callback in trainer.checkpoint_callbacks:
        if getattr(callback, "last_model_path", ""):
            return callback.last_model_path
    return "none written yet"


def _scalar(value) -> str:
    try:
        return f"{float(value.detach() if torch.is_tensor(value) else value):.4g}"
    except (TypeError, ValueError, RuntimeError):
        return str(value)
