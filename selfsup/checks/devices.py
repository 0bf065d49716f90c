"""The devices a run asks for, checked before torch loads: devices and nodes, precision, CPU processes
against the cores, and a recipe's global batch across device counts (with the world size, by the run
layer). The device count against the machine needs torch: selfsup/run/launch.py."""

from __future__ import annotations

import os

from selfsup.errors import UserError

PRECISIONS = (
    "64-true",
    "32-true",
    "16-mixed",
    "bf16-mixed",
    "16-true",
    "bf16-true",
    "transformer-engine",
    "transformer-engine-float16",
    "64",
    "32",
    "16",
    "bf16",
)


def requested_devices(devices) -> int | None:
    """How many devices per node `trainer.devices` asks for; None for "auto" / -1 (all there are)."""
    if isinstance(devices, bool):
        return None
    if isinstance(devices, int):
        return None if devices == -1 else devices
    if isinstance(devices, str):
        text = devices.strip()
        if text in ("auto", "-1"):
            return None
        if "," in text:
            return len([d for d in text.split(",") if d.strip()])
        return int(text) if text.isdigit() else None
    try:
        return len(list(devices))  # a list of device indices
    except TypeError:
        return None


def check_devices(cfg) -> None:
    """What Lightning would refuse with a traceback (the device count against the machine: run/launch.py)."""
    devices, wanted = cfg.trainer.devices, requested_devices(cfg.trainer.devices)
    if (
        wanted is not None
        and wanted < 1
        or isinstance(devices, float)
        or (isinstance(devices, str) and wanted is None and devices.strip() not in ("auto", "-1"))
    ):
        raise UserError(
            f"trainer.devices={devices} is not a device count: use trainer.devices=auto (every GPU, or "
            "one CPU process), a count >= 1, -1, or a list of GPU indices like [0,1]"
        )
    if cfg.trainer.num_nodes is None or cfg.trainer.num_nodes < 1:
        raise UserError(f"trainer.num_nodes must be >= 1, got {cfg.trainer.num_nodes}")


def check_precision(trainer) -> None:
    node = trainer._get_node("precision")
    if node._is_interpolation():  # ${auto_precision:}: a valid choice, and resolving it imports torch
        return
    if str(trainer.precision) not in PRECISIONS:
        raise UserError(
            f"trainer.precision={trainer.precision} is not a precision: use one of "
            f"{', '.join(PRECISIONS[:6])} (bf16-mixed on GPUs since Ampere and on bf16 CPUs)"
        )


def check_cpu_devices(trainer) -> None:
    wanted = requested_devices(trainer.devices)
    if str(trainer.accelerator) == "cpu" and wanted is not None:
        cores = len(os.sched_getaffinity(0))
        if wanted < 1 or wanted > cores:
            raise UserError(
                f"trainer.devices={trainer.devices} CPU processes but this machine gives this job "
                f"{cores} cores: set trainer.devices to 1..{cores}"
            )


def check_global_batch(cfg, world: int) -> None:
    """A recipe's published global batch is kept whatever the device count: refuse a per-device batch
    that no longer multiplies up to it, naming the one that does."""
    wanted = cfg.data.get("global_batch_size")
    if wanted is None:
        return
    accumulate = cfg.trainer.accumulate_grad_batches
    actual = cfg.data.batch_size * world * accumulate
    if actual == wanted:
        return
    per_device, rest = divmod(wanted, world * accumulate)
    fix = (
        f"set data.batch_size={per_device}"
        if not rest and per_device > 0
        else "use a device count that divides it (or trainer.accumulate_grad_batches)"
    )
    raise UserError(
        f"the recipe's global batch is data.global_batch_size={wanted}, but data.batch_size="
        f"{cfg.data.batch_size} x {world} devices x {accumulate} accumulation = {actual}: {fix} to keep "
        f"it, or data.global_batch_size={actual} to change the recipe"
    )
