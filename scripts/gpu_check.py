"""`make gpu-check`: every CUDA path of the project, run once on one GPU in at most 9 minutes.

    python scripts/gpu_check.py                                          # parts 1-5 and 7 (no data)
    python scripts/gpu_check.py data_root=../shared/data/cifar10-subset  # + part 6, the recipes
    python scripts/gpu_check.py --dry-run                                # the same code on the CPU, tiny sizes
    python scripts/gpu_check.py --only 2,3                               # some parts only
    python scripts/gpu_check.py --to-markdown outputs/gpu_check/<time>/gpu_check.json

Parts, each in its own process with its own time box (the sum is printed at the start); a part that
fails, raises or overruns its box is recorded as such and the next one runs:
  1 syncbn    SyncBatchNorm on a rank per GPU (NCCL; on one GPU 2 ranks share it over gloo) equals
              BatchNorm on the global batch
  2 step      the training step, module vs bare loop (scripts/bench_step.py): SimCLR, MoCo v2, BYOL at
              CIFAR size (ResNet-18 CIFAR stem, batch 512) and 224 px (ResNet-50, batch 128), bf16;
              SimCLR also in NCHW and with compile=true; images/s and peak GPU memory
  3 epoch     seconds per 50,000-image CIFAR-size SimCLR epoch at part 2's rates (goal <= 8 s)
  4 loader    224 px on generated JPEGs: CPU decode + augment vs on-device augmentation vs nvJPEG
              decode (scripts/bench_loader.py), images/s, and which side (loader or step) is slower
  5 equality  on-device augmentation vs the CPU pipeline, per op, in distribution; nvJPEG vs PIL;
              nvJPEG leaves work queued on the caller's stream intact
  6 recipes   every conf/experiment/*_cpu_short recipe as written, on data_root=, kNN at init and end
  7 train     one train.py run with trainer.accelerator=gpu, its results.json

No network and no downloads: step timing uses the bundled digits, the loader a folder of JPEGs
generated here. Writes <out>/gpu_check.json (path printed) and prints the README's markdown table.
Exit status 0 when no part failed, errored or overran (skipped parts are fine), else 1."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

from bench_common import REPO, cpu_model, quiet  # (puts the checkout on sys.path)

from selfsup.errors import UserError, exit_on_user_error

LIMIT_S = 540  # the whole check, start-up included: 9 minutes
EPOCH_IMAGES = 50_000  # a CIFAR-10 epoch
EPOCH_ANCHOR = ("lightly, A6000", 26.0)  # s per CIFAR-size SimCLR epoch (lightly's benchmarks)
EPOCH_GOAL_S = 8.0  # on an H100
SYNCBN_TOL = 1e-5
KS_CRITICAL = 2.23  # two-sample KS at alpha 1e-4 per statistic (48 of them): sqrt(-ln(alpha/2)/2)
JPEG_MEAN_TOL = 2.0  # uint8 levels: torchvision's own nvJPEG-vs-libjpeg tolerance
RECIPE_CAP_S = 100  # one recipe run, start-up and evaluation included
RECIPE_MIN_S = 40  # a recipe is not started with less of the part's box left
DRY_RUN_BOX_FACTOR = 6  # --dry-run: the boxes only catch a hang there; a shared 2-core CPU is slow (train.py: 15-150 s)


class Skip(Exception):
    """The part cannot run here; the message says why (its inputs were built)."""


@dataclass
class Check:
    """What every part gets: where it runs, where it writes, the finished parts' records."""

    dry_run: bool
    cuda: bool
    data_root: Path | None
    out: Path
    done: dict
    part: str = ""
    deadline: float = 0.0

    @property
    def device(self) -> str:
        return "cuda" if self.cuda else "cpu"

    def row(self, label: str, **figures) -> None:
        """One line of the table, printed now and kept in <out>/<part>.rows.jsonl (a part killed at
        its box keeps the rows it had printed)."""
        figures = {k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in figures.items()}  # 4 digits
        print(f"  {self.part:<8} {label:<34} " + "  ".join(f"{k}={_fmt(v)}" for k, v in figures.items()), flush=True)
        with open(self.out / f"{self.part}.rows.jsonl", "a") as f:
            f.write(json.dumps({"label": label, **figures}) + "\n")

    def rows(self, part: str) -> list[dict]:
        return self.done.get(part, {}).get("rows", [])


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


# --- 1: SyncBN numerics -----------------------------------------------------------------------------
def _syncbn_net():
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1), nn.BatchNorm2d(4)
    )
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial affine parameters
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias)
    return net


def _syncbn_data(world_size: int, batch: int):
    import torch

    g = torch.Generator().manual_seed(1)
    images = torch.randn(world_size * batch, 3, 8, 8, generator=g) * 2 + 0.5
    weights = torch.randn(world_size * batch, 4, 8, 8, generator=g)  # loss = sum(out * weights)
    return images, weights


def _exact_fp32():
    import torch

    torch.backends.cudnn.allow_tf32 = False  # TF32 convolutions alone differ by ~1e-3
    torch.backends.cuda.matmul.allow_tf32 = False


def _syncbn_pass(net, images, weights) -> dict:
    x = images.requires_grad_(True)
    y = net(x)
    (y * weights).sum().backward()
    inner = getattr(net, "module", net)
    return {
        "y": y.detach().cpu(),
        "x_grad": x.grad.cpu(),
        "stats": {k: v.cpu() for k, v in inner.state_dict().items() if "running" in k},
        "param_grads": [p.grad.cpu() for p in inner.parameters()],
    }


def _syncbn_rank(rank: int, world_size: int, batch: int, backend: str, init_file: str, out: str):
    """One rank of part 1 (mp.spawn): its share of the global batch through DDP + SyncBatchNorm, on
    GPU rank % GPUs."""
    import torch
    import torch.distributed as dist
    from torch import nn

    _exact_fp32()
    device = torch.device("cuda", rank % torch.cuda.device_count())
    torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        images, weights = _syncbn_data(world_size, batch)
        rows = slice(rank * batch, (rank + 1) * batch)
        net = nn.SyncBatchNorm.convert_sync_batchnorm(_syncbn_net()).to(device)
        model = nn.parallel.DistributedDataParallel(net, device_ids=[device.index])
        torch.save(
            _syncbn_pass(model, images[rows].to(device), weights[rows].to(device)), os.path.join(out, f"rank{rank}.pt")
        )
    finally:
        dist.destroy_process_group()


def part_syncbn(check: Check) -> str:
    """SyncBatchNorm under DDP (as strategy=ddp_syncbn converts it) on one rank per GPU, at least 2 (on
    one GPU two ranks share it over gloo: NCCL refuses two ranks on one GPU), against one process with
    plain BatchNorm on the whole global batch: outputs, input gradients, DDP-averaged parameter
    gradients, running statistics."""
    import torch
    import torch.multiprocessing as mp

    gpus = torch.cuda.device_count() if check.cuda else 0
    world_size, batch, backend = max(2, gpus), 4, "nccl" if gpus >= 2 else "gloo"
    _exact_fp32()
    images, weights = _syncbn_data(world_size, batch)
    reference = _syncbn_pass(_syncbn_net().to(check.device), images.to(check.device), weights.to(check.device))
    if not check.cuda:
        raise Skip("no CUDA (torch.nn.SyncBatchNorm runs on GPUs only); the reference pass ran on the CPU")
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(
            _syncbn_rank,
            args=(world_size, batch, backend, os.path.join(tmp, "init"), tmp),
            nprocs=world_size,
            join=True,
        )
        ranks = [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(world_size)]
    diffs = {
        "outputs": (torch.cat([r["y"] for r in ranks]) - reference["y"]).abs().max().item(),
        "input gradients": (torch.cat([r["x_grad"] for r in ranks]) - reference["x_grad"]).abs().max().item(),
        # DDP averages parameter gradients over ranks; each rank's loss is its share of the sum.
        "parameter gradients": max(
            (got - want / world_size).abs().max().item()
            for r in ranks
            for got, want in zip(r["param_grads"], reference["param_grads"])
        ),
        "running statistics": max(
            (r["stats"][k] - v).abs().max().item() for r in ranks for k, v in reference["stats"].items()
        ),
    }
    for name, diff in diffs.items():
        check.row(name, ranks=world_size, backend=backend, max_abs_diff=diff, tol=SYNCBN_TOL, ok=diff <= SYNCBN_TOL)
    worst = max(diffs, key=diffs.get)
    if diffs[worst] > SYNCBN_TOL:
        return f"failed: {worst} differ by {diffs[worst]:.1e} > {SYNCBN_TOL:g}"
    return f"passed: every difference <= {SYNCBN_TOL:g} (largest {diffs[worst]:.1e}, {worst})"


# --- 2 and 3: the training step, and what it makes of a CIFAR epoch -------------------------------
# size: (backbone, px, batch); the dry run keeps the code path at sizes a 2-core CPU steps in seconds
STEP_SIZES = {"cifar": ("resnet18", 32, 512), "224px": ("resnet50", 224, 128)}
DRY_STEP_SIZES = {"cifar": ("resnet18", 16, 8), "224px": ("resnet50", 32, 4)}
STEP_METHODS = ("simclr", "mocov2", "byol")


def _step_plan(dry_run: bool) -> list[tuple[str, str, str]]:
    """(method, size, variant): every method at both sizes in the fast default (bf16, channels_last),
    then SimCLR in NCHW and compiled; compilation last, so that a box reached there keeps the rest.
    The dry run: both sizes and both memory formats in two configurations (the methods differ by name)."""
    if dry_run:
        return [("simclr", "cifar", "default"), ("simclr", "224px", "nchw"), ("simclr", "cifar", "compile")]
    plan = [(m, size, "default") for size in STEP_SIZES for m in STEP_METHODS]
    return plan + [("simclr", size, variant) for variant in ("nchw", "compile") for size in STEP_SIZES]


def part_step(check: Check) -> str:
    """bench.py's step mode per (method, size, variant): the LightningModule through the project's
    Trainer and the bare loop, alternating on a fixed batch on the device; median images/s."""
    import gc

    import bench
    import bench_step
    import torch

    sizes = DRY_STEP_SIZES if check.dry_run else STEP_SIZES
    measured = 0
    for method, size, variant in _step_plan(check.dry_run):
        backbone, px, batch = sizes[size]
        label = f"{method} {size} {variant}"
        if variant == "compile" and check.dry_run:
            check.row(label, skipped="--dry-run: torch.compile takes minutes on a CPU")
            continue
        argv = [
            "--method",
            method,
            "--backbone",
            backbone,
            "--resolution",
            str(px),
            "--batch-size",
            str(batch),
            "--device",
            check.device,
            "--no-loader",
            "--workers",
            "0" if check.dry_run else "2",
            "--precision",
            "32-true" if check.dry_run else "bf16-mixed",
            *(
                ["--steps", "1", "--warmup", "0", "--repeats", "1"]
                if check.dry_run
                else ["--steps", "15", "--warmup", "3", "--repeats", "2"]
            ),
            *(["--no-channels-last"] if variant == "nchw" else []),
            *(["--compile"] if variant == "compile" else []),
        ]
        report = bench_step.run_step_mode(bench.parse_args(argv), check.out / "step" / label.replace(" ", "_"))
        c = report["config"]
        check.row(
            label,
            method=method,
            size=size,
            variant=variant,
            backbone=c["backbone"],
            px=c["resolution"],
            batch=c["batch_size"],
            precision=c["precision"],
            channels_last=c["channels_last"],
            compile=c["compile"],
            module_images_per_sec=report["module_images_per_sec"],
            bare_images_per_sec=report["bare_images_per_sec"],
            ratio=report["ratio"],
            gpu_peak_mb=report["gpu_max_allocated_mb"],
            device=report["machine"]["device_name"],
        )
        measured += 1
        del report
        gc.collect()
        if check.cuda:
            torch.cuda.empty_cache()
    return f"measured: {measured} configurations"


def part_epoch(check: Check) -> str:
    """Seconds one 50,000-image CIFAR-size SimCLR epoch takes at each rate part 2 measured."""
    rates = [
        r
        for r in check.rows("step")
        if r.get("method") == "simclr" and r.get("size") == "cifar" and r.get("module_images_per_sec")
    ]
    if not rates:
        return "failed: part 2 measured no CIFAR-size SimCLR step"
    for r in rates:
        seconds = EPOCH_IMAGES / r["module_images_per_sec"]
        check.row(
            r["label"],
            images_per_sec=r["module_images_per_sec"],
            epoch_s=seconds,
            goal_s=EPOCH_GOAL_S,
            meets_goal=seconds <= EPOCH_GOAL_S,
            anchor_s=EPOCH_ANCHOR[1],
            anchor=EPOCH_ANCHOR[0],
        )
    best = max(rates, key=lambda r: r["module_images_per_sec"])
    seconds = EPOCH_IMAGES / best["module_images_per_sec"]
    where = (
        "CPU dry run, not a GPU figure"
        if check.dry_run
        else f"goal <= {EPOCH_GOAL_S:g} s: " + ("met" if seconds <= EPOCH_GOAL_S else "NOT met")
    )
    return f"measured: {seconds:.1f} s per epoch at best ({best['variant']}; {where})"


# --- 4 and 5: the loader, and on-device augmentation and decoding against the CPU's ----------------
def _jpeg(index: int) -> bytes:
    """A photo-like JPEG (smooth colour fields plus grain, 256-512 px a side), the same for an index."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(index)
    h, w = rng.integers(256, 513, size=2)
    coarse = Image.fromarray(rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)).resize(
        (int(w), int(h)), Image.BICUBIC
    )
    pixels = np.asarray(coarse, dtype=np.float32) + rng.normal(0, 6, size=(int(h), int(w), 3))
    buffer = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _write_jpeg(job: tuple[int, str]) -> None:
    index, path = job
    Path(path).write_bytes(_jpeg(index))


def _jpeg_folder(root: Path, train: int, classes: int = 10) -> Path:
    """<root>/train|val/c<k>/<i>.jpg, written by all CPUs."""
    jobs = [
        (i, str(root / split / f"c{i % classes}" / f"{i}.jpg"))
        for split, (start, count) in {"train": (0, train), "val": (train, max(classes, train // 10))}.items()
        for i in range(start, start + count)
    ]
    for _, path in jobs:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    with multiprocessing.get_context("fork").Pool(len(os.sched_getaffinity(0))) as pool:
        pool.map(_write_jpeg, jobs, chunksize=16)
    return root


def part_loader(check: Check) -> str:
    """bench_loader's three loaders at 224 px on generated JPEGs, source images/s, each against the
    SimCLR 224-px step of part 2: the slower of the two is the bottleneck."""
    import bench
    import bench_step
    import torch
    from bench_loader import loader_figures

    images, px, batch, batches = (24, 32, 4, 2) if check.dry_run else (3000, 224, 128, 20)
    start = time.perf_counter()
    root = _jpeg_folder(check.out / "jpegs", images)
    check.row("generated JPEGs", images=images, seconds=time.perf_counter() - start, root=str(root))
    args = bench.parse_args(
        [
            "--resolution",
            str(px),
            "--batch-size",
            str(batch),
            "--device",
            check.device,
            *(["--workers", "0"] if check.dry_run else []),
            "data=folder",
            f"data.root={root}",
        ]
    )
    figures = loader_figures(
        lambda: bench_step.step_config(args, check.out / "loader"), batches, torch.device(check.device)
    )
    step = next(
        (
            r["module_images_per_sec"]
            for r in check.rows("step")  # the default variant comes first
            if r.get("method") == "simclr" and r.get("size") == "224px" and r.get("module_images_per_sec")
        ),
        None,
    )
    names = {
        "cpu_augment": "CPU decode + augment",
        "on_device": "CPU decode, on-device colour ops",
        "decode_on_device": "nvJPEG decode + on-device ops",
    }
    for key, name in names.items():
        rate = figures.get(f"loader_{key}_images_per_sec")
        if rate is None:
            continue
        check.row(
            name,
            images_per_sec=rate,
            workers=figures["loader_workers"],
            step_images_per_sec=step,
            bottleneck=None if step is None else ("loader" if rate < step else "step"),
        )
    return "measured" + ("" if check.cuda else " on the CPU (no CUDA: the decode path used the CPU decoder)")


# per op: the view settings that leave only that op on (p and strength as SimCLR's/BYOL's views use them)
AUGMENT_OPS = {
    "brightness": dict(jitter_p=0.8, brightness=0.4),
    "contrast": dict(jitter_p=0.8, contrast=0.4),
    "saturation": dict(jitter_p=0.8, saturation=0.4),
    "hue": dict(jitter_p=0.8, hue=0.1),
    "grayscale": dict(grayscale_p=0.2),
    "blur": dict(blur_p=0.5),
    "solarize": dict(solarize_p=0.2),
    "simclr view": dict(
        jitter_p=0.8, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, grayscale_p=0.2, blur_p=0.5
    ),
}
AUGMENT_STATS = ("mean_r", "mean_g", "mean_b", "luma_std", "colourfulness", "sharpness")


def _image_stats(images):
    """(N, 3, H, W) in [0, 1] -> (N, 6): channel means, luma spread, colour spread, neighbour difference."""
    import torch

    luma = 0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]
    return torch.stack(
        [
            *images.mean(dim=(2, 3)).unbind(1),
            luma.std(dim=(1, 2)),
            (images - luma.unsqueeze(1)).abs().mean(dim=(1, 2, 3)),
            (images[..., 1:] - images[..., :-1]).abs().mean(dim=(1, 2, 3)),
        ],
        dim=1,
    )


def _compare_augmentation(check: Check, size: int = 96, images: int = 16, draws: int = 24) -> list[str]:
    """Each op of AUGMENT_OPS alone, `draws` times on a fixed batch: the CPU pipeline (view_transform,
    PIL) against DeviceAugment on the device. Per image statistic, the change the op makes must have
    the same distribution on both sides (`_distance` within its critical value). Returns what
    disagrees."""
    import io

    import numpy as np
    import torch
    from omegaconf import OmegaConf
    from PIL import Image

    from selfsup.config import compose_train
    from selfsup.data.gpu_augment import DeviceAugment
    from selfsup.data.transforms import UNCHANGED_VIEW, view_transform

    cfg = compose_train(["data=folder", "data.root=/unused", f"data.resolution={size}"], check.out / "equality")
    augmentation = cfg.augmentation
    assert augmentation.blur, f"blur applies from the data's resolution: {size} px is too small"
    mean, std = torch.tensor(list(augmentation.mean)).view(3, 1, 1), torch.tensor(list(augmentation.std)).view(3, 1, 1)
    photos = [Image.open(io.BytesIO(_jpeg(i))).convert("RGB").resize((size, size)) for i in range(images)]
    batch = torch.stack([torch.from_numpy(np.asarray(photo)).permute(2, 0, 1) for photo in photos])
    base = _image_stats(batch.float() / 255).repeat(draws, 1)
    device_augment = DeviceAugment(augmentation)
    torch.manual_seed(0)
    disagreements = []
    for op, settings in AUGMENT_OPS.items():
        view = OmegaConf.merge(augmentation.views[0], {**UNCHANGED_VIEW, **settings})
        transform = view_transform(view, size, augmentation.mean, augmentation.std, blur=True)
        pil = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in batch]
        on_cpu = torch.stack([transform(img) for _ in range(draws) for img in pil]) * std + mean
        with torch.no_grad():
            on_device = (
                torch.cat([device_augment.augment_view(batch.to(check.device), view) for _ in range(draws)]).cpu() * std
                + mean
            )
        on_cpu, on_device = _image_stats(on_cpu) - base, _image_stats(on_device) - base
        critical = KS_CRITICAL * (2 / len(on_cpu)) ** 0.5
        distances = {stat: _distance(on_cpu[:, k], on_device[:, k]) for k, stat in enumerate(AUGMENT_STATS)}
        worst = max(distances, key=distances.get)
        check.row(
            f"augment {op}",
            draws=len(on_cpu),
            device=check.device,
            worst_stat=worst,
            distance=distances[worst],
            critical=critical,
            ok=distances[worst] <= critical,
        )
        if distances[worst] > critical:
            disagreements.append(f"{op}: {worst} distributions {distances[worst]:.2f} apart (critical {critical:.2f})")
    return disagreements


def _distance(a, b, tol: float = 1.5 / 255) -> float:
    """Two-sample Kolmogorov-Smirnov distance that lets values move by `tol` (the uint8 rounding PIL
    does between steps): max over x of F_a(x - tol) - F_b(x) and F_b(x - tol) - F_a(x)."""
    import torch

    a, b = a.sort().values, b.sort().values
    grid = torch.cat([a, b, a + tol, b + tol])

    def cdf(sorted_values, x):
        return torch.searchsorted(sorted_values, x, right=True).float() / len(sorted_values)

    return max((cdf(a, grid - tol) - cdf(b, grid)).max().item(), (cdf(b, grid - tol) - cdf(a, grid)).max().item())


def _compare_decoding(check: Check, images: int = 16) -> list[str]:
    """PIL (libjpeg) against torchvision's CPU decoder and, on CUDA, nvJPEG (batched, as
    gpu_augment.decode_images calls it): mean |difference| per image in uint8 levels."""
    import io

    import numpy as np
    import torch
    from PIL import Image
    from torchvision.io import ImageReadMode, decode_jpeg

    encoded = [_jpeg(1000 + i) for i in range(images)]
    pil = [torch.from_numpy(np.asarray(Image.open(io.BytesIO(e)).convert("RGB"))).permute(2, 0, 1) for e in encoded]
    data = [torch.frombuffer(bytearray(e), dtype=torch.uint8) for e in encoded]
    decoders = {"torchvision CPU": "cpu", **({"nvJPEG": "cuda"} if check.cuda else {})}
    failures = []
    for name, device in decoders.items():
        decoded = [d.cpu() for d in decode_jpeg(data, mode=ImageReadMode.RGB, device=device)]
        diffs = [(d.float() - p.float()).abs() for d, p in zip(decoded, pil)]
        worst_mean = max(d.mean().item() for d in diffs)
        check.row(
            f"decode {name} vs PIL",
            images=images,
            worst_mean_abs=worst_mean,
            max_abs=max(d.max().item() for d in diffs),
            tol=JPEG_MEAN_TOL,
            ok=worst_mean < JPEG_MEAN_TOL,
        )
        if worst_mean >= JPEG_MEAN_TOL:
            failures.append(f"{name} decodes {worst_mean:.2f} levels from PIL on average (tolerance {JPEG_MEAN_TOL:g})")
    if check.cuda:
        failures += _decode_keeps_queued_work(check, data, [p.shape for p in pil])
    else:
        check.row("nvJPEG vs queued work", skipped="no CUDA")
    return failures


def _decode_keeps_queued_work(check: Check, data, shapes, rounds: int = 20) -> list[str]:
    """nvJPEG must not write into memory that work queued on the caller's stream still reads (reported
    for nvJPEG's hardware engine, pytorch/vision#9606): tensors the size of the decoded images are
    filled, read by reductions queued behind a long matmul, freed while those are queued (the caching
    allocator may hand their blocks to the decoder), then the batch is decoded; every reduction must
    still see what was written."""
    import math

    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    busy = torch.randn(4096, 4096, device="cuda")
    corrupted = 0
    for _ in range(rounds):
        blocks = [
            torch.full((math.prod(s),), k % 200 + 1, dtype=torch.uint8, device="cuda") for k, s in enumerate(shapes)
        ]
        torch.cuda.synchronize()
        for _ in range(8):
            busy = (busy @ busy).tanh_()
        sums = [b.sum() for b in blocks]
        del blocks
        decode_jpeg(data, mode=ImageReadMode.RGB, device="cuda")
        torch.cuda.synchronize()
        corrupted += any(s.item() != (k % 200 + 1) * math.prod(shape) for k, (s, shape) in enumerate(zip(sums, shapes)))
    check.row("nvJPEG vs queued work", rounds=rounds, corrupted_rounds=corrupted, ok=corrupted == 0)
    return (
        [
            f"nvJPEG overwrote memory still read by queued work in {corrupted}/{rounds} rounds: "
            "selfsup/data/gpu_augment.py:decode_images must synchronize the stream before decoding"
        ]
        if corrupted
        else []
    )


def part_equality(check: Check) -> str:
    images, draws = (8, 4) if check.dry_run else (16, 24)
    failures = _compare_augmentation(check, images=images, draws=draws) + _compare_decoding(check, images)
    if failures:
        return "failed: " + "; ".join(failures)
    return "passed" + ("" if check.cuda else " on the CPU (on-device ops on the CPU; nvJPEG skipped: no CUDA)")


# --- 6 and 7: train.py itself -------------------------------------------------------------------------
def _train_py(overrides: list[str], run_dir: Path) -> subprocess.Popen:
    """train.py in its own directory; its output goes to <run dir>/train.log."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log = open(run_dir / "train.log", "w")
    return subprocess.Popen(
        [
            sys.executable,
            str(REPO / "train.py"),
            *overrides,
            "resume=never",
            "trainer.enable_progress_bar=false",
            "trainer.devices=1",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "WANDB_MODE": "offline"},
    )


def _results(run_dir: Path, returncode: int | None) -> dict:
    """The figures of a finished train.py run, or why there are none."""
    path = run_dir / "results.json"
    if returncode != 0 or not path.is_file():
        tail = (run_dir / "train.log").read_text(errors="replace").strip().splitlines()[-1:] or [""]
        why = "killed at its time cap" if returncode is None or returncode < 0 else f"exit {returncode}"
        return {"error": f"{why}: {tail[0][-160:]}", "log": str(run_dir / "train.log")}
    r = json.loads(path.read_text())
    init, end = r.get("knn_top1_at_init"), r.get("knn_top1")
    return {
        "knn_top1_at_init": init,
        "knn_top1": end,
        "knn_gain": None if init is None or end is None else end - init,
        "epochs": r.get("epochs"),
        "steps": r.get("steps"),
        "train_s": r.get("train_seconds"),
        "images_per_sec": r.get("train_images_per_sec"),
        "gpu_mem_peak_gb": r.get("gpu_mem_peak_gb"),
        "gpu_monitor_logged": "sys/gpu_mem_peak_gb" in r.get("metrics", {}),
        "precision": r.get("precision"),
        "results": str(path),
    }


def cpu_short_recipes() -> list[str]:
    """Read when the part runs: the recipes change while the check is written and rerun."""
    return sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*_cpu_short.yaml"))


def part_recipes(check: Check) -> str:
    """Every *_cpu_short recipe as written (its epochs are sized for ~3 minutes of a 2-core CPU) on the
    CIFAR sample, a few at a time on the one GPU, each with its share of the CPUs for loader workers."""
    recipes = cpu_short_recipes()
    if check.data_root is None:
        raise Skip(
            f"no data_root= given ({len(recipes)} recipes: {', '.join(recipes)}); "
            "make gpu-check ARGS='data_root=../shared/data/cifar10-subset'"
        )
    cpus = len(os.sched_getaffinity(0))
    slots = 1 if check.dry_run else max(1, min(5, cpus // 3))  # 16 CPUs: 5 runs of 1 main process + 2 workers
    workers = 0 if check.dry_run else max(1, cpus // slots - 1)
    common = [
        f"data.root={check.data_root}",
        f"trainer.accelerator={'gpu' if check.cuda else 'cpu'}",
        f"data.num_workers={workers}",
        "images=false",
    ]
    if check.dry_run:  # two steps of the first recipe: the code path, not a figure
        recipes, common = (
            recipes[:1],
            common
            + [
                "trainer.max_epochs=1",
                "++trainer.limit_train_batches=2",
                "data.batch_size=16",
                "trainer.precision=32-true",
            ],
        )
    waiting, running, failed, learned = list(recipes), {}, 0, 0
    while waiting or running:
        while waiting and len(running) < slots:
            name, cap = waiting.pop(0), min(RECIPE_CAP_S, check.deadline - time.time() - 3)
            if cap < RECIPE_MIN_S:
                check.row(name, error=f"not started: {cap:.0f} s left of the part's time box")
                failed += 1
                continue
            proc = _train_py([f"experiment={name}", *common], check.out / "recipes" / name)
            running[name] = (proc, time.time(), cap)
        time.sleep(0.5)
        for name, (proc, started, cap) in list(running.items()):
            if proc.poll() is None and time.time() - started < cap:
                continue
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            figures = _results(check.out / "recipes" / name, proc.returncode)
            failed += "error" in figures
            learned += (figures.get("knn_gain") or 0) > 0
            check.row(name, wall_s=time.time() - started, **figures)
            del running[name]
    if failed:
        return f"failed: {failed} of {len(recipes)} recipes gave no results.json"
    return f"measured: {len(recipes)} recipes, kNN above init in {learned}"


def part_train(check: Check) -> str:
    """One real `train.py` run on the GPU: the default SimCLR on the bundled digits for 2 epochs with
    the colour ops on the device, bf16, kNN at init and at the end, results.json."""
    overrides = [f"trainer.accelerator={'gpu' if check.cuda else 'cpu'}", "augmentation.on_device=true"]
    overrides += (
        [
            "trainer.max_epochs=1",
            "++trainer.limit_train_batches=2",
            "++trainer.limit_val_batches=2",
            "data.num_workers=0",
            "images=false",
            "trainer.precision=32-true",
            "backbone.cifar_stem=false",
            "eval.linear=null",
            "eval.knn_at_init=false",
        ]
        if check.dry_run
        else ["trainer.max_epochs=2"]
    )
    proc = _train_py(overrides, check.out / "train")
    proc.wait()
    figures = _results(check.out / "train", proc.returncode)
    check.row("train.py " + " ".join(overrides[:2]), **figures)
    if "error" in figures:
        return f"failed: train.py {figures['error']} (log: {figures['log']})"
    if figures["knn_top1"] is None:
        return "failed: results.json has no knn_top1"
    if check.cuda and not (figures["gpu_mem_peak_gb"] and figures["gpu_monitor_logged"]):
        return "failed: no GPU memory peak in results.json or no sys/gpu_mem_peak_gb logged: did it train on the GPU?"
    return f"passed: kNN top-1 {figures['knn_top1']:.3f}, results.json written"


# --- the time-box runner ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Part:
    number: int
    name: str
    title: str
    limit_s: int
    run: Callable[[Check], str]


PARTS = (
    Part(1, "syncbn", "SyncBN on 2 ranks sharing the GPU = BatchNorm on the global batch", 35, part_syncbn),
    Part(2, "step", "training step, module vs bare loop: images/s, peak GPU memory", 200, part_step),
    Part(3, "epoch", "seconds per 50,000-image CIFAR-size SimCLR epoch", 5, part_epoch),
    Part(4, "loader", "loader at 224 px: CPU augment, on-device augment, nvJPEG decode", 55, part_loader),
    Part(5, "equality", "on-device augmentation = CPU pipeline in distribution; nvJPEG = PIL", 30, part_equality),
    Part(6, "recipes", "every *_cpu_short recipe on data_root=: kNN at init and end", 150, part_recipes),
    Part(7, "train", "one train.py run on the GPU writes results.json", 50, part_train),
)


def _child(part: Part, check: Check) -> None:
    """A part's process: its own process group (so the box can end it with everything it started),
    which ends itself too if the check is killed from outside (its parent gone)."""
    import threading

    os.setpgrp()
    parent = os.getppid()

    def end_with_parent():
        while os.getppid() == parent:
            time.sleep(1)
        os.killpg(0, signal.SIGKILL)

    threading.Thread(target=end_with_parent, daemon=True).start()
    quiet()
    try:
        status = part.run(check)
    except Skip as reason:
        status = f"skipped: {reason}"
    except BaseException as err:  # noqa: BLE001  (recorded, and the next part runs)
        (check.out / f"{part.name}.traceback.txt").write_text(traceback.format_exc())
        status = f"error: {type(err).__name__}: {' '.join(str(err).split())[:300]}"
    (check.out / f"{part.name}.status").write_text(status)


def run_boxed(part: Part, check: Check, box_s: float) -> dict:
    """Run `part` in a forked process for at most `box_s` seconds; its record (status, seconds, rows)."""
    import torch

    if torch.cuda.is_initialized():  # a forked part could not use CUDA then
        raise RuntimeError("the gpu check's parent process initialised CUDA before forking a part")
    check.part, check.deadline = part.name, time.time() + box_s
    started = time.perf_counter()
    process = multiprocessing.get_context("fork").Process(target=_child, args=(part, check), name=part.name)
    process.start()
    process.join(box_s)
    overran = process.is_alive()
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the part's leftovers too: loader workers, ranks, train.py
    except ProcessLookupError:
        pass
    process.join()
    status_file = check.out / f"{part.name}.status"
    if overran:
        status = f"timeout: stopped at its {box_s:.0f} s time box (the rows before it are kept)"
    elif status_file.is_file():
        status = status_file.read_text()
    else:
        status = f"error: the part's process died (exit {process.exitcode})"
    rows_file = check.out / f"{part.name}.rows.jsonl"
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()] if rows_file.is_file() else []
    record = {
        "number": part.number,
        "name": part.name,
        "title": part.title,
        "limit_s": part.limit_s,
        "box_s": box_s,
        "seconds": round(time.perf_counter() - started, 1),
        "status": status,
        "rows": rows,
    }
    if (check.out / f"{part.name}.traceback.txt").is_file():
        record["traceback"] = str(check.out / f"{part.name}.traceback.txt")
    return record


def status_kind(status: str) -> str:
    """A status's first word: passed, measured, skipped, failed, error or timeout."""
    return status.split(None, 1)[0].rstrip(":")


def failed(record: dict) -> bool:
    return status_kind(record["status"]) in ("failed", "error", "timeout")


def _cuda_probe() -> str | None:
    """The first GPU's name and memory, or None without CUDA; asked in a process of its own, since a
    parent that has touched the CUDA driver cannot hand CUDA to the parts it forks."""
    probe = (
        "import torch; p = torch.cuda.get_device_properties(0) if torch.cuda.is_available() else None; "
        "print(f'{p.name}, {p.total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} visible' if p else '')"
    )
    try:
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return None
    return out.stdout.strip() or None


def to_markdown(report: dict) -> str:
    """The README's GPU table: one line per figure row of every part, and each part's status."""
    m = report["machine"]
    lines = [
        f"`make gpu-check` {report['date']}, {m['gpu'] or 'no GPU'} ({m['cpus']} CPUs, {m['cpu']}), "
        f"torch {m['torch']}{', --dry-run' if report['dry_run'] else ''}; {report['path']}",
        "",
        "| part | row | figures |",
        "|---|---|---|",
    ]
    for part in report["parts"]:
        lines.append(
            f"| {part['number']} {part['name']} | **status** | {part['status'].replace('|', '/')} "
            f"({part['seconds']:.0f} s of {part['box_s']:.0f}) |"
        )
        for row in part["rows"]:
            figures = ", ".join(
                f"{k} {_fmt(v)}"
                for k, v in row.items()
                if k not in ("label", "results", "log", "root", "device") and v is not None
            )
            lines.append(f"| | {row['label']} | {figures.replace('|', '/')} |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("settings", nargs="*", help="data_root=<image folder> (the CIFAR sample, for part 6)")
    p.add_argument("--dry-run", action="store_true", help="on the CPU with tiny sizes; GPU-only parts skip")
    p.add_argument("--only", default=None, help="comma-separated part numbers or names, e.g. 2,3 or step,epoch")
    p.add_argument("--out", default=None, help="directory for gpu_check.json (default outputs/gpu_check/<time>)")
    p.add_argument("--to-markdown", metavar="JSON", default=None, help="print the markdown table of a gpu_check.json")
    args = p.parse_args(argv)
    args.data_root = None
    for setting in args.settings:
        key, eq, value = setting.partition("=")
        if key != "data_root" or not eq:
            raise UserError(f"unexpected argument '{setting}': the one setting is data_root=<image folder>")
        args.data_root = Path(value).resolve()
        if not (args.data_root / "train").is_dir():
            raise UserError(
                f"data_root={value}: no train/ folder under {args.data_root} "
                "(expected <root>/train/<class>/<image>, e.g. ../shared/data/cifar10-subset)"
            )
    wanted = set(args.only.split(",")) if args.only else None
    args.parts = [p for p in PARTS if wanted is None or {str(p.number), p.name} & wanted]
    if not args.parts:
        raise UserError(f"--only {args.only}: no such part (parts: {', '.join(f'{p.number} {p.name}' for p in PARTS)})")
    return args


@exit_on_user_error
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.to_markdown:
        print(to_markdown(json.loads(Path(args.to_markdown).read_text())))
        return 0
    gpu = None if args.dry_run else _cuda_probe()
    if gpu is None and not args.dry_run:
        raise UserError("no CUDA GPU visible: run `make gpu-check` on a GPU machine, or --dry-run on the CPU")
    import pytorch_lightning  # noqa: F401  (imported once here, shared by every forked part)
    import torch

    cuda = gpu is not None
    out = Path(args.out) if args.out else REPO / "outputs" / "gpu_check" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)
    check = Check(dry_run=args.dry_run, cuda=cuda, data_root=args.data_root, out=out, done={})
    boxes = sum(p.limit_s for p in args.parts)
    print(
        f"gpu check{' (--dry-run, CPU)' if args.dry_run else ''}: time boxes "
        + " + ".join(f"{p.number} {p.name} {p.limit_s} s" for p in args.parts)
        + f" = {boxes} s (limit {LIMIT_S} s)"
        + (f"; --dry-run allows {DRY_RUN_BOX_FACTOR}x each on a small shared CPU" if args.dry_run else ""),
        flush=True,
    )
    report = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "dry_run": args.dry_run,
        "data_root": str(args.data_root) if args.data_root else None,
        "time_boxes_s": boxes,
        "limit_s": LIMIT_S,
        "machine": {
            "gpu": gpu,
            "cpu": cpu_model(),
            "cpus": len(os.sched_getaffinity(0)),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
        },
        "path": str(out / "gpu_check.json"),
        "parts": [],
    }
    started = time.perf_counter()
    for part in args.parts:
        box_s = part.limit_s * (DRY_RUN_BOX_FACTOR if args.dry_run else 1)
        print(f"[{part.number} {part.name}] {part.title}: up to {box_s} s", flush=True)
        record = run_boxed(part, check, box_s)
        check.done[part.name] = record
        report["parts"].append(record)
        print(f"[{part.number} {part.name}] {record['status']} ({record['seconds']:.1f} s)", flush=True)
    report["seconds"] = round(time.perf_counter() - started, 1)
    Path(report["path"]).write_text(json.dumps(report, indent=2) + "\n")
    print("\n" + to_markdown(report) + "\n")
    bad = [f"{p['number']} {p['name']}" for p in report["parts"] if failed(p)]
    print(
        f"gpu check: {len(report['parts']) - len(bad)} of {len(report['parts'])} parts without failure"
        + (f" (not: {', '.join(bad)})" if bad else "")
        + f" in {report['seconds']:.0f} s"
    )
    print(f"gpu_check: {report['path']}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
