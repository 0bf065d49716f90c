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
import contextlib
import json
import logging
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CIFAR_SAMPLE = REPO.parent / "shared" / "data" / "cifar10-subset"
E2E_METHODS = ("simclr", "mocov2", "byol")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--e2e", action="store_true", help="end to end: train.py's pipeline vs a plain loop (bench_e2e.py)")
    p.add_argument("--methods", default=",".join(E2E_METHODS), help="--e2e: comma-separated conf/method names")
    p.add_argument("--root", default=str(CIFAR_SAMPLE), help="--e2e: image folder (<root>/train/<class>/<image>)")
    p.add_argument("--tty", action="store_true",
                   help="--e2e: run train.py on a pseudo-terminal, as interactively (Rich progress bar, not epoch lines)")
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
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps (step mode: per repeat, default 5; --e2e: default one epoch of --root)")
    p.add_argument("--warmup", type=int, default=None, help="untimed warm-up steps first (default 2; --e2e 5)")
    p.add_argument("--repeats", type=int, default=None,
                   help="alternating repeats, the median reported (step mode: module/bare, default 3; --e2e: default 1)")
    p.add_argument("--loader-batches", type=int, default=8, help="step mode: timed batches per loader variant")
    p.add_argument("--baseline", action="store_true",
                   help="step mode: also time the module in fp32 + NCHW (32-true, no channels_last): speed-up")
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


# --- config and model, as train.py / the run pipeline build them -----------------------------------
def compose(overrides: list[str], out_dir: Path):
    """conf/train.yaml with `overrides`, as train.py composes it, its paths pointed at `out_dir`."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import open_dict

    from selfsup.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.root_dir = str(REPO)
        cfg.paths.output_dir = str(out_dir)
        cfg.paths.data_dir = str(REPO / "data")
        cfg.paths.log_dir = str(REPO / "outputs")
    return cfg


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


def step_config(args, out_dir: Path, precision=None, channels_last=None):
    overrides = common_overrides(args, args.method, precision, channels_last)
    if args.data:
        overrides.append(f"data={args.data}")
    return compose(overrides + ["trainer.max_epochs=1", "trainer.limit_val_batches=0", "trainer.check_val_every_n_epoch=1",
                                "trainer.enable_progress_bar=false",
                                "eval.knn_at_init=false", "images=false", *args.overrides], out_dir)


def build(cfg):
    """(the config completed from the data, its data module, its model); `cfg` is left as it was."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from selfsup import distributed
    from selfsup.checks import check_train_config
    from selfsup.data.datamodule import SSLDataModule, completed_config
    from selfsup.data.datasets import build_datasets

    check_train_config(cfg)
    datasets = build_datasets(cfg.data)
    cfg = completed_config(cfg, datasets)
    OmegaConf.resolve(cfg)
    datamodule = SSLDataModule(cfg.data, cfg.augmentation, devices_per_node=1, datasets=datasets)
    model = get_class(cfg.method._target_)(cfg)
    if cfg.strategy.split_bn_groups > 1:
        distributed.convert_split_batchnorm(model, cfg.strategy.split_bn_groups)
    return cfg, datamodule, model


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
            scaled_lr(cfg.optimizer, cfg.data.batch_size), total_steps, steps_per_epoch)
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


# --- step mode: module vs bare on a fixed batch ------------------------------------------------------
class PeakMemory:
    """Peak RSS of this process over a block (Linux: VmHWM after resetting it via clear_refs), and
    the CUDA max-allocated over it on GPU."""

    overall_rss_mb = 0.0  # the whole run's peak: the marks read before each reset, and the last

    def __init__(self, device):
        self.device = device
        self.rss_mb = None
        self.gpu_mb = None

    @classmethod
    def run_peak_mb(cls) -> float:
        return max(cls.overall_rss_mb, cls._hwm_mb())

    @staticmethod
    def _hwm_mb():
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def __enter__(self):
        import torch

        PeakMemory.overall_rss_mb = PeakMemory.run_peak_mb()
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc):
        import torch

        self.rss_mb = self._hwm_mb()
        if self.device.type == "cuda":
            self.gpu_mb = torch.cuda.max_memory_allocated(self.device) / 2**20


class FixedBatches:
    """The same batch `n` times: a loader that costs nothing, so the module timing is the step."""

    def __init__(self, batch, n: int):
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        for _ in range(self.n):
            yield self.batch


def _move(batch, device):
    import torch

    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_move(b, device) for b in batch)
    return batch


def run_module(cfg, model, batch, steps: int, device) -> tuple[float, PeakMemory]:
    """The project's LightningModule through the project's Trainer on `batch`, `steps` + 1 times."""
    import pytorch_lightning as pl
    from omegaconf import open_dict

    from selfsup.run.launch import build_trainer

    class StepClock(pl.Callback):
        def __init__(self):
            self.ends = []

        def on_train_batch_end(self, trainer, pl_module, outputs, b, batch_idx):
            if batch_idx in (0, steps):  # sync only at the window's edges: no extra syncs inside it
                sync(device)
                self.ends.append((time.perf_counter(), time.process_time()))

    with open_dict(cfg):
        cfg.trainer.limit_train_batches = steps + 1
        cfg.trainer.log_every_n_steps = max(1, min(int(cfg.trainer.log_every_n_steps), steps))
    trainer = build_trainer(cfg)
    # No checkpoint at the end of every timed fit (it falls outside the timed window anyway).
    # nor a model summary at the start of each (before it, idem).
    trainer.callbacks = [c for c in trainer.callbacks
                         if not isinstance(c, (pl.callbacks.ModelCheckpoint, pl.callbacks.ModelSummary))]
    clock = StepClock()
    trainer.callbacks.append(clock)
    with PeakMemory(device) as memory:
        trainer.fit(model, train_dataloaders=FixedBatches(batch, steps + 1))
    (wall0, cpu0), (wall1, cpu1) = clock.ends
    memory.cpu_ms_per_step = 1000 * (cpu1 - cpu0) / steps
    return steps * len(batch[1]) / (wall1 - wall0), memory


def run_bare(bare: BareLoop, batch, steps: int) -> tuple[float, PeakMemory]:
    bare.start()
    with PeakMemory(bare.device) as memory:
        bare.step(*batch)  # the untimed first step, as the module's first batch
        sync(bare.device)
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(steps):
            bare.step(*batch)
        sync(bare.device)
        seconds = time.perf_counter() - start
    memory.cpu_ms_per_step = 1000 * (time.process_time() - cpu_start) / steps
    return steps * len(batch[1]) / seconds, memory


def run_loader(datamodule, batches: int, device, device_augment=None) -> float:
    """Source images per second out of the train loader (+ the on-device colour ops, when given),
    after two untimed batches (worker start-up)."""
    loader = datamodule.train_dataloader()
    it = iter(loader)
    n_images = 0
    start = None
    for i in range(batches + 2):
        if i == 2:
            sync(device)
            start = time.perf_counter()
        try:
            views, labels = next(it)
        except StopIteration:
            it = iter(loader)
            views, labels = next(it)
        if device_augment is not None:
            if device_augment.decode:
                views = device_augment.decode_and_crop(views, device)
            views = device_augment([v.to(device, non_blocking=True) for v in views])
        if i >= 2:
            n_images += len(labels)
    sync(device)
    seconds = time.perf_counter() - start
    del it
    return n_images / seconds


def loader_figures(args, out_dir: Path, device) -> dict:
    from omegaconf import OmegaConf, open_dict

    from selfsup.data.datamodule import SSLDataModule, completed_config
    from selfsup.data.datasets import build_datasets
    from selfsup.data.gpu_augment import DeviceAugment

    figures = {}
    for name, on_device in (("cpu_augment", False), ("on_device", True)):
        cfg = step_config(args, out_dir)
        with open_dict(cfg):
            cfg.augmentation.on_device = on_device
            cfg.data.decode_on_gpu = False
        datasets = build_datasets(cfg.data)
        cfg = completed_config(cfg, datasets)
        OmegaConf.resolve(cfg)
        datamodule = SSLDataModule(cfg.data, cfg.augmentation, devices_per_node=1, datasets=datasets)
        augment = DeviceAugment(cfg.augmentation) if on_device else None
        figures[f"loader_{name}_images_per_sec"] = run_loader(datamodule, args.loader_batches, device, augment)
        figures["loader_workers"] = datamodule.num_workers
        if name == "on_device" and hasattr(datamodule.pretrain, "samples"):  # image folder: decode on the device too
            with open_dict(cfg):
                cfg.data.decode_on_gpu = True
            decode_dm = SSLDataModule(cfg.data, cfg.augmentation, devices_per_node=1)  # its own, encoded, datasets
            augment = DeviceAugment(cfg.augmentation, decode=True)
            figures["loader_decode_on_device_images_per_sec"] = run_loader(decode_dm, args.loader_batches, device, augment)
    return figures


def run_step_mode(args, out_dir: Path) -> dict:
    import pytorch_lightning as pl

    from selfsup.run.launch import training_device

    cfg = step_config(args, out_dir)
    pl.seed_everything(cfg.seed or 0, verbose=False)
    cfg, datamodule, model = build(cfg)
    device = training_device(cfg.trainer)
    decode = model.device_augment is not None and model.device_augment.decode
    first = next(iter(datamodule.train_dataloader()))
    if decode:  # the steps are timed on decoded, cropped views; decoding is the loader's figure
        first = (model.device_augment.decode_and_crop(first[0], device), first[1])
        model.device_augment.decode = False
    batch = _move(first, device)
    contenders = {"module": (cfg, model)}
    if args.baseline:
        base_cfg = step_config(args, out_dir / "baseline", precision="32-true", channels_last=False)
        pl.seed_everything(cfg.seed or 0, verbose=False)
        base_cfg, _, base_model = build(base_cfg)
        contenders["baseline"] = (base_cfg, base_model)
    bare = BareLoop(cfg, model, device, total_steps=10_000, steps_per_epoch=1_000)

    def measure(name: str, steps: int):
        if name == "bare":
            return run_bare(bare, batch, steps)
        c_cfg, c_model = contenders[name]
        return run_module(c_cfg, c_model, batch, steps, device)

    order = list(contenders) + ["bare"]
    for name in order if args.warmup > 0 else ():  # warm-up: allocator, oneDNN / cuDNN kernels, compile
        measure(name, args.warmup)
    results = {name: [] for name in order}
    memory = {name: [] for name in order}
    for r in range(args.repeats):
        for name in (order if r % 2 == 0 else order[::-1]):
            speed, mem = measure(name, args.steps)
            results[name].append(speed)
            memory[name].append(mem)
            print(f"  repeat {r + 1}/{args.repeats} {name:>8}: {speed:8.1f} images/s", flush=True)

    figures = {}
    if not args.no_loader:
        figures = loader_figures(args, out_dir, device)
        key = "loader_on_device_images_per_sec" if cfg.augmentation.get("on_device") else "loader_cpu_augment_images_per_sec"
        if decode and "loader_decode_on_device_images_per_sec" in figures:
            key = "loader_decode_on_device_images_per_sec"
        figures = {"loader_images_per_sec": figures[key], **figures}

    median = {name: statistics.median(v) for name, v in results.items()}
    gpu_peaks = [m.gpu_mb for ms in memory.values() for m in ms if m.gpu_mb is not None]
    report = {
        "module_images_per_sec": round(median["module"], 2),
        "bare_images_per_sec": round(median["bare"], 2),
        "ratio": round(median["module"] / median["bare"], 4),
        **{k: (round(v, 2) if isinstance(v, float) else v) for k, v in figures.items()},
        "module_step_ms": round(1000 * args.batch_size / median["module"], 1),
        "bare_step_ms": round(1000 * args.batch_size / median["bare"], 1),
        # CPU time of this process per step (all its threads): less sensitive than wall time to other
        # processes on a shared machine; on a GPU it is the host-side cost of a step.
        "module_cpu_ms_per_step": round(statistics.median(m.cpu_ms_per_step for m in memory["module"]), 1),
        "bare_cpu_ms_per_step": round(statistics.median(m.cpu_ms_per_step for m in memory["bare"]), 1),
        "module_peak_rss_mb": round(max(m.rss_mb for m in memory["module"]), 1),
        "bare_peak_rss_mb": round(max(m.rss_mb for m in memory["bare"]), 1),
        "peak_rss_mb": round(PeakMemory.run_peak_mb(), 1),
        "gpu_max_allocated_mb": round(max(gpu_peaks), 1) if gpu_peaks else None,
    }
    if args.baseline:
        report["baseline_fp32_nchw_images_per_sec"] = round(median["baseline"], 2)
        report["speedup_vs_fp32_nchw"] = round(median["module"] / median["baseline"], 3)
    report["repeats"] = {name: [round(v, 2) for v in vals] for name, vals in results.items()}
    report["config"] = {**run_config(cfg, args), "decode_on_gpu": bool(decode), "repeats": args.repeats}
    report["machine"] = machine(device)
    return report


# --- shared: what ran where, the report ---------------------------------------------------------------
def run_config(cfg, args) -> dict:
    return {
        "method": cfg.method.name, "backbone": cfg.backbone.name, "cifar_stem": bool(cfg.backbone.cifar_stem),
        "data": cfg.data.name, "resolution": int(cfg.data.resolution), "batch_size": int(cfg.data.batch_size),
        "views": len(cfg.augmentation.views), "precision": str(cfg.trainer.precision),
        "channels_last": bool(cfg.backbone.channels_last), "compile": bool(cfg.get("compile", False)),
        "on_device": bool(cfg.augmentation.get("on_device", False)), "optimizer": cfg.optimizer.name,
        "workers": cfg.data.num_workers, "steps": args.steps, "warmup": args.warmup, "overrides": list(args.overrides),
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
        "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "cpu": cpu_model(), "cpus": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "lightning": pl.__version__, "python": platform.python_version(),
    }


def quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv=None) -> dict:
    args = parse_args(argv)
    quiet()
    out_dir = Path(args.out) if args.out else REPO / "outputs" / "bench" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    load_start, t_start = os.getloadavg()[0], time.perf_counter()
    if args.e2e:
        import bench_e2e

        report, table = bench_e2e.run(args, out_dir)
    else:
        report = run_step_mode(args, out_dir)
        table = step_table(report)
    report["machine"]["load_average_1min"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    path = out_dir / "bench.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(table + f"\n  load average (1 min) before/after: {report['machine']['load_average_1min']}", flush=True)
    print(f"bench: {path}", flush=True)
    return report


def step_table(report: dict) -> str:
    c = report["config"]
    lines = [f"\n{c['method']} {c['backbone']}{' (CIFAR stem)' if c['cifar_stem'] else ''}, {c['data']} at "
             f"{c['resolution']} px, batch {c['batch_size']} x {c['views']} views, {c['precision']}, "
             f"{'channels_last' if c['channels_last'] else 'NCHW'}{', compiled' if c['compile'] else ''}"
             f"{', on-device augmentation' if c['on_device'] else ''} on {report['machine']['device_name']} "
             f"({report['machine']['device']})"]
    rows = [(k, v) for k, v in report.items() if k not in ("repeats", "config", "machine", "seconds")]
    width = max(len(k) for k, _ in rows)
    lines += [f"  {key:<{width}}  {'n/a' if value is None else value}" for key, value in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
