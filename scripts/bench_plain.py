"""`scripts/bench.py --e2e`, the plain side: a torchvision ImageFolder of <root>/train with
torchvision's transforms written out per view from the same augmentation config (`PlainViews`), a
DataLoader (shuffle, drop_last, persistent workers) and `BareLoop` (bench_common.py), in a fresh
process; its window written as the pipeline side's is."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

from bench_common import PHASES, BareLoop, Stopwatch, quiet, sync, window

from selfsup.config import compose_train


class PlainViews:
    """torchvision's transforms for each configured view, written out as a plain script (or lightly's
    transforms) would: crop, flip, colour jitter, grayscale, blur, solarize, to tensor, normalise."""

    def __init__(self, augmentation):
        from torchvision import transforms as T

        def view(v):
            size = v.get("resolution") or augmentation.resolution
            blur = T.GaussianBlur(int(0.1 * size) // 2 * 2 + 1, sigma=(0.1, 2.0))
            return T.Compose(
                [
                    T.RandomResizedCrop(size, scale=tuple(v.crop_scale)),
                    T.RandomHorizontalFlip(v.flip_p),
                    T.RandomApply([T.ColorJitter(v.brightness, v.contrast, v.saturation, v.hue)], p=v.jitter_p),
                    T.RandomGrayscale(v.grayscale_p),
                    T.RandomApply([blur], p=v.blur_p if augmentation.blur else 0.0),
                    T.RandomSolarize(128, p=v.solarize_p),
                    T.ToTensor(),
                    T.Normalize(list(augmentation.mean), list(augmentation.std)),
                ]
            )

        self.views = [view(v) for v in augmentation.views]

    def __call__(self, image):
        return [view(image) for view in self.views]


def plain_loop(overrides: list[str], root: str, warmup: int, steps: int, run_dir: Path) -> None:
    """(In a fresh process.) The plain side's window, written to <run_dir>/clock.json."""
    import torch
    from hydra.utils import get_class
    from omegaconf import OmegaConf, open_dict
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    from selfsup.run.launch import training_device

    quiet()
    cfg = compose_train(overrides, run_dir)
    torch.manual_seed(cfg.seed)
    images = ImageFolder(str(Path(root) / "train"), transform=PlainViews(cfg.augmentation))
    with open_dict(cfg):
        cfg.data.num_classes = len(images.classes)
    OmegaConf.resolve(cfg)
    model = get_class(cfg.method._target_)(cfg)
    device = training_device(cfg.trainer)
    workers = cfg.data.num_workers
    loader = DataLoader(
        images,
        batch_size=cfg.data.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    loop = BareLoop(cfg, model, device, total_steps=warmup + steps, steps_per_epoch=len(loader))
    loop.start()
    phases, done, start = dict.fromkeys(PHASES, 0.0), 0, None
    while done < warmup + steps:
        batches = iter(loader)
        while done < warmup + steps:
            waiting = time.perf_counter()
            batch = next(batches, None)
            if batch is None:
                break
            waited = time.perf_counter() - waiting
            views, labels = batch
            spent = loop.step([v.to(device, non_blocking=True) for v in views], labels.to(device, non_blocking=True))
            done += 1
            if start is not None:
                start.lap()
                for name, seconds in (("data", waited), *spent.items()):
                    phases[name] += seconds
            elif done == warmup:
                sync(device)
                start = Stopwatch()
        loop.position.current_epoch += 1
    sync(device)
    result = window(steps, cfg.data.batch_size, start, phases)
    (run_dir / "clock.json").write_text(json.dumps(result, indent=2) + "\n")


def time_plain(overrides: list[str], root: str, warmup: int, steps: int, run_dir: Path) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    process = multiprocessing.get_context("spawn").Process(
        target=plain_loop, args=(overrides, root, warmup, steps, run_dir)
    )
    process.start()
    try:
        process.join()
    finally:
        if process.is_alive():
            process.terminate()
            process.join()
    if process.exitcode != 0:
        raise SystemExit(f"bench: the plain loop failed (exit {process.exitcode}); see its traceback above")
    return json.loads((run_dir / "clock.json").read_text())
