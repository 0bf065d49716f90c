"""Loader images/s, data=shards against the same JPEGs as a class-folder tree (docs/bench.md).

Generates JPEGs (smooth noise, q=90) at each side, writes them as a folder and as shards
(scripts/make_shards.py's writer), then times the pretraining loader both ways (SimCLR's two views,
CPU augmentation, the run's SSLDataModule.train_dataloader) at each worker count: images out of the
loader per second over `--batches` batches after two untimed ones (worker start-up).

  python scripts/bench_shards.py [--sides 32 224] [--workers 1 2] [--images 512] [--batches 8]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from datetime import datetime
from pathlib import Path

import numpy as np
from bench_common import REPO, quiet
from bench_loader import run_loader
from PIL import Image

CLASSES = 4


def make_jpegs(root: Path, side: int, count: int) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", count), ("val", count // 8)):
        for i in range(n):
            folder = root / split / f"class{i % CLASSES}"
            folder.mkdir(parents=True, exist_ok=True)
            coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            image = Image.fromarray(coarse).resize((side, side), Image.BILINEAR)
            image.save(folder / f"{i:05d}.jpg", quality=90)
    return root


def loader_images_per_sec(overrides: list[str], batches: int, scratch: str) -> float:
    import torch
    from omegaconf import OmegaConf

    from selfsup.config import compose_train
    from selfsup.data.datamodule import build_data

    cfg, datamodule = build_data(compose_train(["method=simclr", *overrides], output_dir=scratch))
    OmegaConf.resolve(cfg)
    return run_loader(datamodule, batches, torch.device("cpu"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sides", type=int, nargs="+", default=[32, 224])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    from selfsup.config import compose_train
    from selfsup.data.datasets import build_datasets
    from selfsup.data.shards import encoded_samples, write_meta, write_split

    quiet()
    rows = []
    out = REPO / "outputs" / "bench" / f"shards-{datetime.now():%Y-%m-%d_%H-%M-%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-shards-") as scratch:
        for side in args.sides:
            folder = make_jpegs(Path(scratch) / f"folder{side}", side, args.images)
            shards = Path(scratch) / f"shards{side}"
            _, labelled, val = build_datasets(compose_train(["data=folder", f"data.root={folder}"]).data)
            labels = {
                split: write_split(encoded_samples(dataset), shards / split)
                for split, dataset in (("train", labelled), ("val", val))
            }
            write_meta(shards, labelled.classes, labels, source=str(folder))
            for workers in args.workers:
                common = [
                    f"data.batch_size={args.batch_size}",
                    f"data.num_workers={workers}",
                    f"data.resolution={side}",
                ]
                row = {"side": side, "workers": workers}
                for name, data in (
                    ("folder", ["data=folder", f"data.root={folder}"]),
                    ("shards", ["data=shards", f"data.root={shards}"]),
                ):
                    row[name] = round(loader_images_per_sec([*data, *common], args.batches, scratch), 1)
                rows.append(row)
                print(
                    f"{side:>4} px  {workers} workers  folder {row['folder']:8.1f}  shards {row['shards']:8.1f} images/s",
                    flush=True,
                )
                out.write_text(
                    json.dumps(
                        {
                            "images": args.images,
                            "batches": args.batches,  # each row: a cut-short
                            "batch_size": args.batch_size,
                            "rows": rows,
                        },
                        indent=1,
                    )
                )  # run keeps it
    print(f"figures: {out}")


if __name__ == "__main__":
    main()
