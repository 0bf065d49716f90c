"""`make bench`: how fast training runs, measured two ways.

    python scripts/bench.py --e2e                               # end to end, SimCLR/MoCo v2/BYOL, CIFAR sample
    python scripts/bench.py --e2e --methods byol --steps 20     # one method, a shorter window
    python scripts/bench.py                                     # one step: SimCLR, ResNet-18, batch 256, digits
    python scripts/bench.py --method byol --resolution 32 --baseline
    python scripts/bench.py data=folder data.root=../shared/data/cifar10-subset   # any Hydra override

--e2e (scripts/bench_e2e.py): `train.py`'s whole pipeline (its DataModule, augmentation, loader
workers, callbacks, loggers, Lightning) against a plain loop over a plain torchvision ImageFolder +
DataLoader with the same model, loss, optimizer, batch, precision and worker count, one after the
other per method, each in a fresh process: images/s of N optimizer steps after a warm-up, the ratio,
and where each step's time goes (data wait, forward, backward, update, EMA targets, framework).

Step mode (default): in ONE process, after warm-up, module and bare measurements alternate (module
first on even repeats, bare first on odd) on a fixed, already-on-device batch, so only the step is
timed; medians are reported. The model, optimizer, scheduler, precision and memory format come from
`conf/train.yaml` composed exactly as train.py composes it.
- module: `trainer.fit` of the project's LightningModule with the project's Trainer (its callbacks,
  CSV logger, precision plugin); the Trainer logs every min(log_every_n_steps, --steps) steps so each
  timed window includes a logging step. Time runs from the end of the first batch of a fit to the end
  of its last.
- bare: `BareLoop`, the module's own step (`step_losses`: its training_loss, heads, queue update and
  online probe; its optimizer and schedule; its hooks, e.g. the EMA update) with no framework around it.
- loader: the two-view augmentation pipeline alone with the configured workers (CPU augmentation,
  and workers-crop-only + on-device colour ops), source images per second.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import datetime
from pathlib import Path

import bench_e2e
import bench_step
from bench_common import REPO, quiet

CIFAR_SAMPLE = REPO.parent / "shared" / "data" / "cifar10-subset"
E2E_METHODS = ("simclr", "mocov2", "byol")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--e2e", action="store_true", help="end to end: train.py's pipeline vs a plain loop (bench_e2e.py)")
    p.add_argument("--methods", default=",".join(E2E_METHODS), help="--e2e: comma-separated conf/method names")
    p.add_argument("--root", default=str(CIFAR_SAMPLE), help="--e2e: image folder (<root>/train/<class>/<image>)")
    p.add_argument(
        "--tty",
        action="store_true",
        help="--e2e: run train.py on a pseudo-terminal, as interactively (Rich progress bar, not epoch lines)",
    )
    p.add_argument("--method", default="simclr", help="step mode: conf/method/<name> (simclr, mocov2, byol, ...)")
    p.add_argument("--backbone", default="resnet18", help="conf/backbone/<name>")
    p.add_argument("--data", default=None, help="step mode: conf/data/<name> (default: train.yaml's, the digits)")
    p.add_argument("--batch-size", type=int, default=None, help="per-device batch (default 256; --e2e 128)")
    p.add_argument("--resolution", type=int, default=None, help="view side in px (default: the data's; --e2e 32)")
    p.add_argument("--precision", default=None, help="trainer.precision (default: this machine's, ${auto_precision:})")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="training device")
    p.add_argument("--no-channels-last", action="store_true", help="NCHW instead of channels_last")
    p.add_argument("--on-device", action="store_true", help="augmentation.on_device=true for the training steps")
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone (compile=true)")
    p.add_argument("--workers", type=int, default=None, help="data.num_workers (default: from the CPUs; --e2e 1)")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed steps (step mode: per repeat, default 5; --e2e: default one epoch of --root)",
    )
    p.add_argument("--warmup", type=int, default=None, help="untimed warm-up steps first (default 2; --e2e 5)")
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="alternating repeats, the median reported (step mode: module/bare, default 3; --e2e: default 1)",
    )
    p.add_argument("--loader-batches", type=int, default=8, help="step mode: timed batches per loader variant")
    p.add_argument(
        "--baseline",
        action="store_true",
        help="step mode: also time the module in fp32 + NCHW (32-true, no channels_last): speed-up",
    )
    p.add_argument("--no-loader", action="store_true", help="step mode: skip the loader measurements")
    p.add_argument("--out", default=None, help="directory for bench.json (default outputs/bench/<time>)")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. optimizer=lars")
    args = p.parse_args(argv)
    args.batch_size = args.batch_size or (128 if args.e2e else 256)
    args.warmup = args.warmup if args.warmup is not None else (5 if args.e2e else 2)
    args.repeats = args.repeats or (1 if args.e2e else 3)
    if args.e2e:
        args.resolution = args.resolution or 32
        args.workers = 1 if args.workers is None else args.workers
    elif args.steps is None:
        args.steps = 5
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    quiet()
    out_dir = Path(args.out) if args.out else REPO / "outputs" / "bench" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    load_start, t_start = os.getloadavg()[0], time.perf_counter()
    if args.e2e:
        report, table = bench_e2e.run(args, out_dir)
    else:
        report = bench_step.run_step_mode(args, out_dir)
        table = bench_step.step_table(report)
    report["machine"]["load_average_1min"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    path = out_dir / "bench.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(table + f"\n  load average (1 min) before/after: {report['machine']['load_average_1min']}", flush=True)
    print(f"bench: {path}", flush=True)
    return report


if __name__ == "__main__":
    main()
