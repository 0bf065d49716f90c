"""`scripts/bench.py --e2e`: train.py's whole pipeline against a plain PyTorch loop, end to end.

Per method, one after the other, each side in a fresh process, the same config (model, loss,
optimizer, batch, precision, memory format, loader workers, seed):
- pipeline: `python train.py` itself (its DataModule and augmentation, loader workers, callbacks,
  loggers, progress display, checkpoints, Lightning) with `trainer.max_steps` = warm-up + N, without
  the kNN monitor and the kNN at init (the plain loop evaluates nothing), with Lightning's
  SimpleProfiler (trainer.profiler=simple) and `PipelineClock`, a callback added by Hydra override
  that times the window from inside the run and writes it to a file; the bench then ends the run
  (its final evaluation is no part of training).
- plain (bench_plain.py): a torchvision ImageFolder of <root>/train with torchvision's transforms
  written out per view from the same augmentation config (`PlainViews`), a DataLoader (shuffle,
  drop_last, persistent workers) and `bench_common.BareLoop`: the module's own step with no
  framework around it.
Each window starts after the last warm-up step and holds N optimizer steps (and N EMA updates); with
the default N, one epoch of the data, it also holds one epoch boundary and what happens there.

Per step, in ms: data (waiting for the loader), forward (the module's step: losses and probe, plus,
in the pipeline, the non-finite guard and the logging calls of training_step), backward, update
(the optimizer step), targets (the module's on_train_batch_end: EMA), framework (everything else:
Lightning's loop, callbacks, loggers, progress display, checkpoints; the plain loop's own few lines).
On a GPU these are host times: the device runs ahead of them; the window's edges are synchronised.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytorch_lightning as pl
from bench_common import PHASES, REPO, Stopwatch, common_overrides, machine, run_config, sync, window
from bench_plain import time_plain

from selfsup.config import compose_train

SCRIPTS = Path(__file__).resolve().parent


# --- the pipeline side: train.py, timed from inside -----------------------------------------------
class PipelineClock(pl.Callback):
    """Times optimizer steps warmup+1 .. warmup+steps of the run it is added to and writes them to
    `path` (JSON), with the per-step breakdown from the run's SimpleProfiler."""

    CONTAINERS = ("run_training_epoch", "run_training_batch", ".optimizer_step")  # hold other actions

    def __init__(self, warmup: int, steps: int, path: str):
        self.warmup, self.steps, self.path = warmup, steps, Path(path)
        self._update_start = self._update = 0.0
        self._start = None

    def on_train_start(self, trainer, pl_module):
        from pytorch_lightning.profilers import SimpleProfiler

        if not isinstance(trainer.profiler, SimpleProfiler):
            raise RuntimeError("PipelineClock reads the per-step breakdown from trainer.profiler=simple")
        trainer.optimizers[0].register_step_post_hook(self._after_update)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self._update_start = time.perf_counter()  # the closure (forward, backward) has run: the update starts

    def _after_update(self, optimizer, args, kwargs):
        self._update += time.perf_counter() - self._update_start

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # (before the module's own on_train_batch_end: each window holds the EMA updates of N steps)
        if trainer.global_step == self.warmup:
            sync(pl_module.device)
            self._counts = {action: len(d) for action, d in trainer.profiler.recorded_durations.items()}
            self._update = 0.0
            self._start = Stopwatch()
        elif self._start is not None and trainer.global_step <= self.warmup + self.steps:
            self._start.lap()
        if trainer.global_step == self.warmup + self.steps and self._start is not None:
            sync(pl_module.device)
            spent = {
                action: sum(d[self._counts.get(action, 0) :])
                for action, d in trainer.profiler.recorded_durations.items()
            }
            module = f"[LightningModule]{type(pl_module).__name__}"
            phases = {
                "data": sum(s for a, s in spent.items() if a.endswith(".train_dataloader_next")),
                "forward": sum(
                    s for a, s in spent.items() if a.startswith("[Strategy]") and a.endswith(".training_step")
                ),
                "backward": sum(s for a, s in spent.items() if a.startswith("[Strategy]") and a.endswith(".backward")),
                "update": self._update,
                "targets": spent.get(f"{module}.on_train_batch_end", 0.0),
            }
            actions = {a: s for a, s in spent.items() if s > 0 and not a.endswith(self.CONTAINERS)}
            top = sorted(actions.items(), key=lambda item: -item[1])[:15]
            result = window(self.steps, len(batch[1]) * trainer.world_size, self._start, phases)
            # (a callback's name carries its state key, e.g. ModelCheckpoint{'monitor': ...}: dropped)
            result["actions_ms_per_step"] = {re.sub(r"\{.*\}", "", a): round(1000 * s / self.steps, 2) for a, s in top}
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(result, indent=2) + "\n")
            os.replace(tmp, self.path)  # whole or absent: the bench polls for it


def time_pipeline(overrides: list[str], warmup: int, steps: int, run_dir: Path, tty: bool = False) -> dict:
    """train.py with `overrides` until PipelineClock has written its window; then the run is ended.
    tty: on a pseudo-terminal, as an interactive user runs it (Lightning's Rich bar, not epoch lines)."""
    result, log_path = run_dir / "clock.json", run_dir / "train.log"
    run_dir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        str(REPO / "train.py"),
        *overrides,
        f"trainer.max_steps={warmup + steps}",
        "trainer.limit_val_batches=0",
        "eval.knn_at_init=false",
        "trainer.profiler=simple",
        "resume=never",
        f"hydra.run.dir={run_dir}",
        "+callbacks.bench_clock._target_=bench_e2e.PipelineClock",
        f"+callbacks.bench_clock.warmup={warmup}",
        f"+callbacks.bench_clock.steps={steps}",
        f"+callbacks.bench_clock.path={result}",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SCRIPTS), os.environ.get("PYTHONPATH")]))}
    with open(log_path, "wb") as log:
        output = log
        if tty:
            reader, output = pty.openpty()
            fcntl.ioctl(output, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 40 x 120 characters
            env.setdefault("TERM", "xterm-256color")
            threading.Thread(target=_copy_terminal, args=(reader, log), daemon=True).start()
        run = subprocess.Popen(
            command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT, env=env, process_group=0
        )  # its own group (the run, its loader workers), in this session
        if tty:
            os.close(output)
        try:
            while not result.exists():
                if run.poll() is not None:
                    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
                    raise SystemExit(
                        f"bench: train.py exited ({run.returncode}) before its timed window ended; {log_path}:\n{tail}"
                    )
                time.sleep(0.2)
        finally:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
                run.wait()
    return json.loads(result.read_text())


def _copy_terminal(reader: int, log) -> None:
    """What the run writes to its terminal, into its log (until the terminal closes)."""
    with contextlib.suppress(OSError):
        while data := os.read(reader, 1 << 16):
            log.write(data)
    os.close(reader)


# --- both, per method ---------------------------------------------------------------------------------
def run(args, out_dir: Path) -> tuple[dict, str]:
    """Both sides for each of `args.methods`: (the report, its table)."""
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # killed: end the runs too
    try:
        return _run(args, out_dir)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args, out_dir: Path) -> tuple[dict, str]:
    from torchvision.datasets import ImageFolder

    from selfsup.run.launch import training_device

    root = Path(args.root).expanduser()
    if not (root / "train").is_dir():
        raise SystemExit(f"bench: no image folder at {root}: pass --root <dir with train/<class>/<image>>")
    if args.warmup < 1:
        raise SystemExit("bench --e2e: --warmup must be >= 1 (the window starts after a warm-up step)")
    steps = args.steps or len(ImageFolder(str(root / "train"))) // args.batch_size  # default: one epoch
    report = {"mode": "e2e", "methods": {}}
    lines = []
    for method in args.methods.split(","):
        overrides = common_overrides(args, method) + [
            "data=folder",
            f"data.root={root}",
            "backbone.cifar_stem=false",
            "optimizer=sgd",
        ]
        overrides = last_wins(overrides + list(args.overrides))
        cfg = compose_train(overrides, out_dir)
        if cfg.augmentation.get("on_device") or cfg.data.get("decode_on_gpu"):
            raise SystemExit(
                "bench --e2e: the plain loop augments in its loader workers, as torchvision does: "
                "drop --on-device / augmentation.on_device / data.decode_on_gpu"
            )
        runs = {"pipeline": [], "plain": []}
        for r in range(args.repeats):  # alternating which side goes first, so drifting load hits both alike
            for side in ("pipeline", "plain") if r % 2 == 0 else ("plain", "pipeline"):
                run_dir = out_dir / method / f"{side}{r}"
                runs[side].append(
                    time_pipeline(overrides, args.warmup, steps, run_dir, args.tty)
                    if side == "pipeline"
                    else time_plain(overrides, str(root), args.warmup, steps, run_dir)
                )
        pipeline, plain = (median_run(runs[side]) for side in ("pipeline", "plain"))
        ratio = pipeline["images_per_sec"] / plain["images_per_sec"]
        report["methods"][method] = {
            "pipeline": pipeline,
            "plain": plain,
            "ratio": round(ratio, 4),
            "repeats": {side: [round(r["images_per_sec"], 1) for r in rs] for side, rs in runs.items()},
            "paired_ratios": [
                round(a["images_per_sec"] / b["images_per_sec"], 4) for a, b in zip(runs["pipeline"], runs["plain"])
            ],
        }
        lines += method_lines(method, pipeline, plain, ratio)
        print("\n".join(lines[-3:]), flush=True)
    config = {key: value for key, value in run_config(cfg, args).items() if key not in ("method", "views")}
    report["config"] = {"methods": list(report["methods"]), **config, "steps": steps, "root": str(root)}
    report["machine"] = machine(training_device(cfg.trainer))
    header = (
        f"\nend to end, {args.warmup} warm-up + {steps} timed steps per side; {cfg.backbone.name} "
        f"{'CIFAR' if cfg.backbone.cifar_stem else 'standard'} stem at {cfg.data.resolution} px, batch "
        f"{cfg.data.batch_size}, {cfg.trainer.precision}, {'channels_last' if cfg.backbone.channels_last else 'NCHW'}, "
        f"{cfg.data.num_workers} loader worker(s), {cfg.optimizer.name}; {report['machine']['device_name']}\n"
        f"  {'':8} {'':9} {'images/s':>9}   ms/step: "
        + " ".join(f"{p:>9}" for p in (*PHASES, "framework"))
        + "  median step  workers CPU ms  CPU elsewhere"
    )
    return report, header + "\n" + "\n".join(lines)


def median_run(runs: list[dict]) -> dict:
    """The run with the median images/s (the lower of the middle two for an even count)."""
    return sorted(runs, key=lambda r: r["images_per_sec"])[(len(runs) - 1) // 2]


def last_wins(overrides: list[str]) -> list[str]:
    """Overrides with one entry per key, the last given (Hydra refuses a key twice)."""
    by_key = {o.split("=", 1)[0].lstrip("+~"): o for o in overrides}
    return list(by_key.values())


def method_lines(method: str, pipeline: dict, plain: dict, ratio: float) -> list[str]:
    def row(name, side):
        ms = side["ms_per_step"]
        return (
            f"  {name:<18} {side['images_per_sec']:9.1f}            "
            + " ".join(f"{ms[p]:9.1f}" for p in (*PHASES, "framework"))
            + f" {side['median_step_ms']:11.1f} {side['loader_workers_cpu_ms_per_step']:14.1f}"
            + f" {100 * side['cpu_share_used_elsewhere']:11.0f}%"
        )

    return [
        row(f"{method} pipeline", pipeline),
        row(f"{method} plain", plain),
        f"  {method} ratio {ratio:.3f} (median step: {plain['median_step_ms'] / pipeline['median_step_ms']:.3f})",
    ]
