"""What the parts of `scripts/bench.py` share: the overrides the command line asks for (the config
itself is composed by `selfsup.config.compose_train`, as train.py composes it), the bare loop (the
module's own step with no framework around it), a timed window (--e2e), and what ran where (config,
machine).

Imported by bench_step.py and bench_loader.py (step mode), bench_e2e.py and bench_plain.py (--e2e)
and bench.py (the CLI); it imports none of them."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


# --- the command line's overrides -----------------------------------------------------------------
def common_overrides(args, method: str, precision=None, channels_last=None) -> list[str]:
    """The Hydra overrides the command line asks for, shared by both modes and both sides."""
    overrides = [f"method={method}", f"backbone={args.backbone}", f"data.batch_size={args.batch_size}"]
    if args.resolution:
        overrides.append(f"data.resolution={args.resolution}")
    if precision or args.precision:
        overrides.append(f"trainer.precision={precision or args.precision}")
    if args.device != "auto":
        overrides += [f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}", "trainer.devices=1"]
    if channels_last is not None or args.no_channels_last:
        overrides.append(f"backbone.channels_last={str(bool(channels_last)).lower()}")
    if args.on_device:
        overrides.append("augmentation.on_device=true")
    if args.compile:
        overrides.append("compile=true")
    if args.workers is not None:
        overrides.append(f"data.num_workers={args.workers}")
    return overrides


# --- the bare loop: the module's own step, no framework -------------------------------------------
def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class LoopPosition:
    """What the module's hooks read from `trainer` (where the schedules are), kept by the bare loop."""

    estimated_stepping_batches: int
    num_training_batches: int
    global_step: int = 0
    current_epoch: int = 0
    accumulate_grad_batches: int = 1
    world_size: int = 1


class BareLoop:
    """Lightning's automatic optimisation of `model` written out, nothing else: the module's
    `step_losses` (training_loss, heads, queue update, online probe) under the precision's autocast,
    backward, the module's optimizer and LR schedule, and its `on_train_start` /
    `on_before_optimizer_step` / `on_train_batch_end` hooks (EMA targets) in Lightning's order."""

    PHASES = ("forward", "backward", "update", "targets")

    def __init__(self, cfg, model, device, total_steps: int, steps_per_epoch: int):
        import torch

        from selfsup.optim import scaled_lr

        self.model, self.device = model.to(device), device
        self.optimizer, self.scheduler = model.optimizer_and_schedule(
            scaled_lr(cfg.optimizer, cfg.data.batch_size), total_steps, steps_per_epoch
        )
        precision = str(cfg.trainer.precision)
        if precision.endswith("-true") and not precision.startswith("32"):
            raise SystemExit(f"bench: the bare loop does not implement precision={precision}")
        dtype = {"bf16": torch.bfloat16, "16": torch.float16}.get(precision.split("-")[0])
        self.autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext
        self.scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
        self.position = LoopPosition(total_steps, steps_per_epoch)

    def start(self) -> None:
        """Attach the loop's position where the hooks look for the trainer; call before stepping (a
        Lightning fit of the same module in between re-attaches its Trainer)."""
        self.model.train()
        self.model.trainer = self.position
        self.model.on_train_start()

    def step(self, views, labels) -> dict[str, float]:
        """One optimizer step on a batch already on the device; the host seconds of each phase."""
        from time import perf_counter

        m = self.model
        t0 = perf_counter()
        if m.device_augment is not None:
            views = m.device_augment(views)
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            out, probe_loss = m.step_losses(views, labels)
        loss = out.loss + probe_loss
        t1 = perf_counter()
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        t2 = perf_counter()
        m.on_before_optimizer_step(self.optimizer)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        t3 = perf_counter()
        self.position.global_step += 1
        m.on_train_batch_end(None, (views, labels), self.position.global_step - 1)
        t4 = perf_counter()
        return dict(zip(self.PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)))


# --- a timed window (--e2e: both sides) --------------------------------------------------------------
PHASES = ("data", "forward", "backward", "update", "targets")


class Stopwatch:
    """Wall time, this process's CPU time, its children's (the loader workers: on a small CPU their
    augmentation competes with the step's compute threads) and the CPU time the rest of the machine
    used since `start`: on a shared machine the last says how far a window's figures were disturbed.
    `lap()` at the end of every step gives the median step, which one slow stretch does not move.
    Linux /proc; elsewhere the CPU figures read 0."""

    def __init__(self):
        self.wall, self.times, self.faults = time.perf_counter(), os.times(), self._faults()
        self.busy, self.own, self.children = self._ticks()
        self.laps = [self.wall]

    def lap(self) -> None:
        self.laps.append(time.perf_counter())

    @staticmethod
    def _faults() -> int:
        """Minor page faults of this process so far (fresh memory from the kernel, zeroed page by page)."""
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    @staticmethod
    def _ticks() -> tuple[int, int, int]:
        """(busy ticks of all CPUs, ticks of this process, ticks of its children)."""
        try:
            busy = sum(int(v) for i, v in enumerate(Path("/proc/stat").read_text().split()[1:9]) if i not in (3, 4))
            own = children = 0
            for stat in Path("/proc").glob("[0-9]*/stat"):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    fields = stat.read_text().rsplit(")", 1)[1].split()
                    ticks = int(fields[11]) + int(fields[12])  # utime + stime
                    if stat.parent.name == str(os.getpid()):
                        own += ticks
                    elif fields[1] == str(os.getpid()):
                        children += ticks
            return busy, own, children
        except OSError:
            return 0, 0, 0

    def read(self) -> dict:
        """Since start: wall seconds, this process's user and system CPU seconds and minor page
        faults, its children's CPU seconds, the median lap and the share of all CPUs used elsewhere."""
        times, (busy, own, children) = os.times(), self._ticks()
        tick = os.sysconf("SC_CLK_TCK")
        wall = time.perf_counter() - self.wall
        elsewhere = (busy - self.busy) - (own - self.own) - (children - self.children)
        laps = sorted(b - a for a, b in zip(self.laps, self.laps[1:]))
        return {
            "wall": wall,
            "user": times.user - self.times.user,
            "system": times.system - self.times.system,
            "faults": self._faults() - self.faults,
            "children": (children - self.children) / tick,
            "median_lap": laps[(len(laps) - 1) // 2] if laps else None,
            "elsewhere": max(0.0, elsewhere / (tick * wall * os.cpu_count())),
        }


def window(steps: int, batch: int, stopwatch: Stopwatch, phases: dict) -> dict:
    """images/s and ms per step of a timed window; what the phases leave of the wall time is framework."""
    spent = stopwatch.read()
    ms = {name: 1000 * phases[name] / steps for name in PHASES}
    ms["framework"] = 1000 * spent["wall"] / steps - sum(ms.values())
    return {
        "images_per_sec": steps * batch / spent["wall"],
        "seconds": spent["wall"],
        "steps": steps,
        "ms_per_step": {name: round(v, 1) for name, v in ms.items()},
        "median_step_ms": spent["median_lap"] and round(1000 * spent["median_lap"], 1),
        "main_process_per_step": {
            "user_ms": round(1000 * spent["user"] / steps, 1),
            "system_ms": round(1000 * spent["system"] / steps, 1),
            "page_faults": round(spent["faults"] / steps),
        },
        "loader_workers_cpu_ms_per_step": round(1000 * spent["children"] / steps, 1),
        "cpu_share_used_elsewhere": round(spent["elsewhere"], 3),
    }


# --- what ran where -----------------------------------------------------------------------------------
def run_config(cfg, args) -> dict:
    return {
        "method": cfg.method.name,
        "backbone": cfg.backbone.name,
        "cifar_stem": bool(cfg.backbone.cifar_stem),
        "data": cfg.data.name,
        "resolution": int(cfg.data.resolution),
        "batch_size": int(cfg.data.batch_size),
        "views": len(cfg.augmentation.views),
        "precision": str(cfg.trainer.precision),
        "channels_last": bool(cfg.backbone.channels_last),
        "compile": bool(cfg.get("compile", False)),
        "on_device": bool(cfg.augmentation.get("on_device", False)),
        "optimizer": cfg.optimizer.name,
        "workers": cfg.data.num_workers,
        "steps": args.steps,
        "warmup": args.warmup,
        "overrides": list(args.overrides),
    }


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine(device) -> dict:
    import pytorch_lightning as pl
    import torch

    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "cpu": cpu_model(),
        "cpus": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "lightning": pl.__version__,
        "python": platform.python_version(),
    }


def quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
