"""Step mode of `scripts/bench.py` (the default): in one process, the project's LightningModule
through its Trainer against `BareLoop` (bench_common.py), alternating, on a fixed batch already on
the device, so only the step is timed; plus the loader's figures (bench_loader.py)."""

from __future__ import annotations

import contextlib
import statistics
import time
from pathlib import Path

from bench_common import BareLoop, common_overrides, machine, run_config, sync
from bench_loader import loader_figures

from selfsup.config import compose_train


# --- config and model, as train.py / the run pipeline build them -----------------------------------
def step_config(args, out_dir: Path, precision=None, channels_last=None):
    overrides = common_overrides(args, args.method, precision, channels_last)
    if args.data:
        overrides.append(f"data={args.data}")
    return compose_train(
        overrides
        + [
            "trainer.max_epochs=1",
            "trainer.limit_val_batches=0",
            "trainer.check_val_every_n_epoch=1",
            "trainer.enable_progress_bar=false",
            "eval.knn_at_init=false",
            "images=false",
            *args.overrides,
        ],
        out_dir,
    )


def build(cfg):
    """(the config completed from the data, its data module, its model); `cfg` is left as it was."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from selfsup import distributed
    from selfsup.checks import check_train_config
    from selfsup.data.datamodule import build_data

    check_train_config(cfg)
    cfg, datamodule = build_data(cfg)
    OmegaConf.resolve(cfg)
    model = get_class(cfg.method._target_)(cfg)
    if cfg.strategy.split_bn_groups > 1:
        distributed.convert_split_batchnorm(model, cfg.strategy.split_bn_groups)
    return cfg, datamodule, model


# --- module vs bare on a fixed batch ------------------------------------------------------------------
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
    trainer.callbacks = [
        c for c in trainer.callbacks if not isinstance(c, (pl.callbacks.ModelCheckpoint, pl.callbacks.ModelSummary))
    ]
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
        for name in order if r % 2 == 0 else order[::-1]:
            speed, mem = measure(name, args.steps)
            results[name].append(speed)
            memory[name].append(mem)
            print(f"  repeat {r + 1}/{args.repeats} {name:>8}: {speed:8.1f} images/s", flush=True)

    figures = {}
    if not args.no_loader:
        figures = loader_figures(lambda: step_config(args, out_dir), args.loader_batches, device)
        key = (
            "loader_on_device_images_per_sec"
            if cfg.augmentation.get("on_device")
            else "loader_cpu_augment_images_per_sec"
        )
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


def step_table(report: dict) -> str:
    c = report["config"]
    lines = [
        f"\n{c['method']} {c['backbone']}{' (CIFAR stem)' if c['cifar_stem'] else ''}, {c['data']} at "
        f"{c['resolution']} px, batch {c['batch_size']} x {c['views']} views, {c['precision']}, "
        f"{'channels_last' if c['channels_last'] else 'NCHW'}{', compiled' if c['compile'] else ''}"
        f"{', on-device augmentation' if c['on_device'] else ''} on {report['machine']['device_name']} "
        f"({report['machine']['device']})"
    ]
    rows = [(k, v) for k, v in report.items() if k not in ("repeats", "config", "machine", "seconds")]
    width = max(len(k) for k, _ in rows)
    lines += [f"  {key:<{width}}  {'n/a' if value is None else value}" for key, value in rows]
    return "\n".join(lines)
