"""`make bench`: how fast a training step is through the project's LightningModule + Trainer, how
fast the same step is as a hand-written PyTorch loop, and how fast the loader makes batches.

    python scripts/bench.py                                    # SimCLR, ResNet-18, batch 256, digits
    python scripts/bench.py --method byol --resolution 32      # CIFAR-sized views
    python scripts/bench.py --precision 32-true --no-channels-last
    python scripts/bench.py --baseline                         # + fp32 NCHW module throughput, same run
    python scripts/bench.py data=folder data.root=../shared/data/cifar10-subset   # any Hydra override

The model, optimizer, scheduler, precision and memory format come from `conf/train.yaml` composed
exactly as train.py composes it. In ONE process, after warm-up, module and bare measurements
alternate (module first on even repeats, bare first on odd) so that drift in machine load hits
both alike; medians are reported.

- module: `trainer.fit` of the project's LightningModule with the project's Trainer (its callbacks,
  CSV logger, precision plugin) over a fixed, already-on-device batch (the loader is not measured
  there); the Trainer logs every min(log_every_n_steps, --steps) steps so each timed window includes
  a logging step. Time runs from the end of the first batch of a fit to the end of its last.
- bare: the same step written out in plain PyTorch (same modules, loss, optimizer + scheduler,
  autocast, memory format, batch, EMA / queue updates) with no framework.
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
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="simclr", help="conf/method/<name> (simclr, mocov2, byol, barlow_twins, ...)")
    p.add_argument("--backbone", default="resnet18", help="conf/backbone/<name>")
    p.add_argument("--data", default=None, help="conf/data/<name> (default: train.yaml's, the bundled digits)")
    p.add_argument("--batch-size", type=int, default=256, help="per-device batch (default 256)")
    p.add_argument("--resolution", type=int, default=None, help="view side in px (default: the data's, 16 for digits)")
    p.add_argument("--precision", default=None, help="trainer.precision (default: this machine's, ${auto_precision:})")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="training device")
    p.add_argument("--no-channels-last", action="store_true", help="NCHW instead of channels_last")
    p.add_argument("--on-device", action="store_true", help="augmentation.on_device=true for the training steps")
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone (compile=true)")
    p.add_argument("--workers", type=int, default=None, help="data.num_workers (default: derived from the CPUs)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per repeat (default 5)")
    p.add_argument("--repeats", type=int, default=3, help="alternating module/bare repeats (default 3)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps of each before the repeats")
    p.add_argument("--loader-batches", type=int, default=8, help="timed loader batches per loader variant")
    p.add_argument("--baseline", action="store_true",
                   help="also time the module in fp32 + NCHW (32-true, no channels_last), alternating: speed-up")
    p.add_argument("--no-loader", action="store_true", help="skip the loader measurements")
    p.add_argument("--out", default=None, help="directory for bench.json (default outputs/bench/<time>)")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. optimizer=lars")
    return p.parse_args(argv)


# --- config and model, as train.py / pipeline.pretrain build them ----------------------------------
def compose(args, out_dir: Path, precision=None, channels_last=None):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import open_dict

    from selfsup.config import register_configs

    register_configs()
    overrides = [f"method={args.method}", f"backbone={args.backbone}", f"data.batch_size={args.batch_size}"]
    if args.data:
        overrides.append(f"data={args.data}")
    if args.resolution:
        overrides.append(f"data.resolution={args.resolution}")
    if precision or args.precision:
        overrides.append(f"trainer.precision={precision or args.precision}")
    if args.device != "auto":
        overrides += [f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}", "trainer.devices=1"]
    if channels_last is not None or args.no_channels_last:
        overrides.append(f"backbone.channels_last={str(bool(channels_last)).lower() if channels_last is not None else 'false'}")
    if args.on_device:
        overrides.append("augmentation.on_device=true")
    if args.compile:
        overrides.append("compile=true")
    if args.workers is not None:
        overrides.append(f"data.num_workers={args.workers}")
    overrides += ["trainer.max_epochs=1", "trainer.limit_val_batches=0", "trainer.enable_progress_bar=false",
                  "eval.knn_at_init=false", *args.overrides]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.root_dir = str(REPO)
        cfg.paths.output_dir = str(out_dir)
        cfg.paths.data_dir = str(REPO / "data")
        cfg.paths.log_dir = str(REPO / "outputs")
    return cfg


def build(cfg):
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from selfsup import distributed
    from selfsup.checks import check_train_config
    from selfsup.data.datamodule import SSLDataModule

    check_train_config(cfg)
    datamodule = SSLDataModule(cfg.data, cfg.augmentation, devices_per_node=1)
    datamodule.complete_config()
    OmegaConf.resolve(cfg)
    model = get_class(cfg.method._target_)(cfg)
    if cfg.strategy.split_bn_groups > 1:
        distributed.convert_split_batchnorm(model, cfg.strategy.split_bn_groups)
    return datamodule, model


# --- measurement helpers -------------------------------------------------------------------------
def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


# --- module: the project's LightningModule through the project's Trainer --------------------------
def run_module(cfg, model, batch, steps: int, device) -> tuple[float, PeakMemory]:
    import pytorch_lightning as pl
    from omegaconf import open_dict

    from selfsup.pipeline import _trainer

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
    trainer = _trainer(cfg)
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


# --- bare: the same step in plain PyTorch ---------------------------------------------------------
class BareLoop:
    """The method's training step written out with the model's own modules, loss, optimizer and
    scheduler, autocast and memory format; no Lightning, no logging, no monitors."""

    def __init__(self, cfg, model, device):
        import torch
        from torch import nn

        from selfsup.optim import build_optimizer, build_scheduler, parameter_groups, scaled_lr

        self.cfg, self.model, self.device = cfg, model, device
        self.name = cfg.method.name
        precision = str(cfg.trainer.precision)
        self.scaler = None
        if precision.startswith("bf16"):
            self.autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16)
        elif precision.startswith("16"):
            self.autocast = lambda: torch.autocast(device.type, dtype=torch.float16)
            self.scaler = torch.amp.GradScaler(device.type)
        else:
            self.autocast = contextlib.nullcontext
        if precision.endswith("-true") and not precision.startswith("32"):
            raise SystemExit(f"bench: the bare loop does not implement precision={precision}")
        opt = cfg.optimizer
        ssl = nn.ModuleList(m for name, m in model.named_children()
                            if name != "online_probe" and name not in model.separately_optimized)
        groups = parameter_groups(ssl, opt.weight_decay, opt.exclude_bias_and_norm)
        groups.append({"params": list(model.online_probe.parameters()), "weight_decay": 0.0,
                       "lr": opt.probe_lr, "lars_exclude": True})
        self.optimizer = build_optimizer(opt, groups, scaled_lr(opt, cfg.data.batch_size))
        self.scheduler = build_scheduler(cfg.scheduler, self.optimizer, 10_000, 1_000)
        self.step_index = 0
        if self.name in ("mocov2", "moco"):
            self.queue = model.queue.queue.detach().clone()
            self.ptr = 0

    def _memory_format(self, x):
        import torch

        return x.contiguous(memory_format=torch.channels_last) if self.model.channels_last else x

    def loss(self, views, labels):
        import torch
        import torch.nn.functional as F

        m = self.model
        if self.name == "simclr":
            features = m.backbone(torch.cat(views))
            z1, z2 = m.projector(features).chunk(2)
            loss, features = m.loss_fn(z1, z2), features[: len(labels)]
        elif self.name == "barlow_twins":
            features = [m.backbone(v) for v in views]
            loss, features = m.loss_fn(m.projector(features[0]), m.projector(features[1])), features[0]
        elif self.name == "byol":
            features = [m.backbone(v) for v in views]
            predictions = [m.predictor(m.projector(f)) for f in features]
            with torch.no_grad():
                targets = [m.target_encoder(v) for v in views]
            loss = m.loss_fn(predictions[0], targets[1]) + m.loss_fn(predictions[1], targets[0])
            features = features[0]
        elif self.name in ("mocov2", "moco"):
            pairs = [(views[0], views[1]), (views[1], views[0])] if m.symmetric else [(views[0], views[1])]
            negatives = self.queue.clone()
            losses, keys, feats = [], [], []
            for q_view, k_view in pairs:
                feats.append(m.backbone(q_view))
                with torch.no_grad():
                    keys.append(F.normalize(m.key_encoder(k_view), dim=1))
                losses.append(m.loss_fn(m.projector(feats[-1]), keys[-1], negatives))
            loss, features = torch.stack(losses).mean(), feats[0]
            k = torch.cat(keys)
            self.queue[self.ptr:self.ptr + len(k)] = k.to(self.queue.dtype)  # host-side pointer: no sync
            self.ptr = (self.ptr + len(k)) % len(self.queue)
        else:  # any other method: its own training_loss (pure PyTorch), the rest written out here
            out = m.training_loss(views)
            loss, features = out.loss, out.features
        probe = F.cross_entropy(m.online_probe(features.detach()), labels, ignore_index=-1)
        return loss + probe

    def ema(self):
        from torch import nn

        from selfsup.methods.momentum import cosine_momentum, update

        m, method = self.model, self.cfg.method
        if self.name == "byol":
            momentum = cosine_momentum(method.momentum, self.step_index, 10_000) if method.momentum_cosine else method.momentum
            update(nn.Sequential(m.backbone, m.projector), m.target_encoder, momentum)
        elif self.name in ("mocov2", "moco"):
            update(nn.Sequential(m.backbone, m.projector), m.key_encoder, method.momentum)
        elif hasattr(m, "momentum_pairs"):
            for online, target in m.momentum_pairs():
                update(online, target, method.momentum)

    def step(self, batch):
        views, labels = batch
        if self.model.device_augment is not None:
            views = self.model.device_augment(views)
        views = [self._memory_format(v) for v in views]
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss = self.loss(views, labels)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.scheduler.step()
        self.ema()
        self.step_index += 1

    def run(self, batch, steps: int) -> tuple[float, PeakMemory]:
        self.model.train()
        with PeakMemory(self.device) as memory:
            self.step(batch)  # the untimed first step, as the module's first batch
            sync(self.device)
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(steps):
                self.step(batch)
            sync(self.device)
            seconds = time.perf_counter() - start
        memory.cpu_ms_per_step = 1000 * (time.process_time() - cpu_start) / steps
        return steps * len(batch[1]) / seconds, memory


# --- loader ---------------------------------------------------------------------------------------
def run_loader(datamodule, batches: int, device, device_augment=None) -> float:
    """Source images per second out of the train loader (+ the on-device colour ops, when given),
    after two untimed batches (worker start-up)."""
    loader = datamodule.train_dataloader()
    it = iter(loader)
    n_images = 0
    needed = batches + 2
    start = None
    for i in range(needed):
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
    from selfsup.data.datamodule import SSLDataModule
    from selfsup.data.gpu_augment import DeviceAugment

    from omegaconf import OmegaConf, open_dict

    figures = {}
    for name, on_device in (("cpu_augment", False), ("on_device", True)):
        cfg = compose(args, out_dir)
        with open_dict(cfg):
            cfg.augmentation.on_device = on_device
            cfg.data.decode_on_gpu = False
        datamodule = SSLDataModule(cfg.data, cfg.augmentation, devices_per_node=1)
        datamodule.complete_config()
        OmegaConf.resolve(cfg)
        augment = DeviceAugment(cfg.augmentation) if on_device else None
        figures[f"loader_{name}_images_per_sec"] = run_loader(datamodule, args.loader_batches, device, augment)
        figures["loader_workers"] = datamodule.num_workers
        if name == "on_device" and hasattr(datamodule.pretrain, "samples"):  # image folder: decode on the device too
            with open_dict(cfg):
                cfg.data.decode_on_gpu = True
            decode_dm = SSLDataModule(cfg.data, cfg.augmentation, devices_per_node=1)
            decode_dm.complete_config()
            augment = DeviceAugment(cfg.augmentation, decode=True)
            figures["loader_decode_on_device_images_per_sec"] = run_loader(decode_dm, args.loader_batches, device, augment)
    return figures


# --- main -----------------------------------------------------------------------------------------
def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import pytorch_lightning as pl
    import torch

    quiet()

    from selfsup.pipeline import _device

    out_dir = Path(args.out) if args.out else REPO / "outputs" / "bench" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()[0]
    t_start = time.perf_counter()

    cfg = compose(args, out_dir)
    pl.seed_everything(cfg.seed or 0, verbose=False)
    datamodule, model = build(cfg)
    device = _device(cfg.trainer)
    decode = model.device_augment is not None and model.device_augment.decode
    first = next(iter(datamodule.train_dataloader()))
    if decode:  # the steps are timed on decoded, cropped views; decoding is the loader's figure
        first = (model.device_augment.decode_and_crop(first[0], device), first[1])
        model.device_augment.decode = False
    batch = _move(first, device)
    contenders = {"module": (cfg, model)}
    if args.baseline:
        base_cfg = compose(args, out_dir / "baseline", precision="32-true", channels_last=False)
        pl.seed_everything(cfg.seed or 0, verbose=False)
        _, base_model = build(base_cfg)
        contenders["baseline"] = (base_cfg, base_model)
    bare = BareLoop(cfg, model.to(device), device)

    def measure(name: str, steps: int):
        if name == "bare":
            return bare.run(batch, steps)
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
    report.update({
        "repeats": {name: [round(v, 2) for v in vals] for name, vals in results.items()},
        "config": {
            "method": cfg.method.name, "backbone": cfg.backbone.name, "cifar_stem": bool(cfg.backbone.cifar_stem),
            "data": cfg.data.name, "resolution": int(cfg.data.resolution), "batch_size": int(cfg.data.batch_size),
            "views": len(cfg.augmentation.views), "precision": str(cfg.trainer.precision),
            "channels_last": bool(cfg.backbone.channels_last), "compile": bool(cfg.get("compile", False)),
            "on_device": bool(cfg.augmentation.get("on_device", False)), "decode_on_gpu": bool(decode),
            "optimizer": cfg.optimizer.name, "steps": args.steps, "repeats": args.repeats, "warmup": args.warmup,
            "overrides": list(args.overrides),
        },
        "machine": {
            "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
            "cpu": cpu_model(), "cpus": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "lightning": pl.__version__, "python": platform.python_version(),
            "load_average_1min": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        },
        "seconds": round(time.perf_counter() - t_start, 1),
    })
    path = out_dir / "bench.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"bench: {path}", flush=True)
    return report


def print_table(report: dict) -> None:
    c = report["config"]
    print(f"\n{c['method']} {c['backbone']}{' (CIFAR stem)' if c['cifar_stem'] else ''}, {c['data']} at {c['resolution']} px, "
          f"batch {c['batch_size']} x {c['views']} views, {c['precision']}, "
          f"{'channels_last' if c['channels_last'] else 'NCHW'}{', compiled' if c['compile'] else ''}"
          f"{', on-device augmentation' if c['on_device'] else ''} on {report['machine']['device_name']} "
          f"({report['machine']['device']}); load average {report['machine']['load_average_1min']}")
    rows = [(k, v) for k, v in report.items() if k not in ("repeats", "config", "machine", "seconds")]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {'n/a' if value is None else value}")


if __name__ == "__main__":
    main()
