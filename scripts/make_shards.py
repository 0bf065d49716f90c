"""Write a dataset as LitData shards for data=shards: `python scripts/make_shards.py data=<source> ... out=DIR`.

Any data source train.py reads: data=folder|imagenet|imagenet100 data.root=<class folders> (each file's bytes
as they are, no re-encoding), data=images data.root=<an unlabelled folder tree or list file>, data=cifar10|
cifar100|stl10|digits (decoded by torchvision: stored once as lossless PNG). Writes DIR/train, DIR/val (where
the source has labels), DIR/labelled (STL-10: the labelled training images) and DIR/shards.json, then prints
the path, the images and the bytes. Safe to re-run: it writes into DIR.partial and renames that to DIR at the
end, so an interrupted run leaves no half-written DIR; a complete DIR is kept unless overwrite=true.

arguments (key=value), besides the data overrides:
  out=DIR            where the shards go (a local directory; copy it to object storage afterwards)
  limit=N            at most N images per split, spread evenly over it (tests, quick trials)
  chunk_mb=64        the size of one chunk file
  seed=0             the images are written in a random order from this seed (see `write_order`)
  overwrite=true     replace an existing DIR

examples:
  python scripts/make_shards.py data=folder data.root=../shared/data/cifar10-subset out=data/shards/cifar10-subset
  python scripts/make_shards.py data=imagenet data.root=/datasets/imagenet out=/nvme/imagenet-shards
  make shards ARGS='data=cifar10 out=data/shards/cifar10'"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfsup.errors import UserError, exit_on_user_error  # noqa: E402  (light: no torch)

KEYS = ("out", "limit", "chunk_mb", "overwrite", "seed")


def parse(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """(this script's arguments, the data overrides)."""
    args, overrides = {}, []
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq:
            raise UserError(f"unexpected argument '{arg}': pass key=value (see --help)")
        if key in KEYS:
            args[key] = value
        elif key == "data" or key.startswith(("data.", "+data.", "++data.", "paths.")):
            overrides.append(arg)
        else:
            raise UserError(f"unexpected argument '{arg}': pass data=..., data.<key>=... and {'=, '.join(KEYS)}=")
    if not args.get("out"):
        raise UserError("make_shards.py needs out=DIR, the directory to write the shards into")
    if "://" in args["out"]:
        raise UserError(
            f"out={args['out']}: write the shards to a local directory, then copy it to object "
            "storage (e.g. aws s3 sync DIR s3://bucket/prefix)"
        )
    return args, overrides


def spread(dataset, limit: int | None):
    """At most `limit` images of `dataset`, evenly spaced (a class-sorted folder keeps every class)."""
    from torch.utils.data import Subset

    if not limit or limit >= len(dataset):
        return dataset
    subset = Subset(dataset, [i * len(dataset) // limit for i in range(limit)])
    if hasattr(dataset, "samples"):  # keep the files' own bytes: the chosen files, not decoded images
        subset.samples = [dataset.samples[i] for i in subset.indices]
    return subset


def write_order(dataset, seed: int):
    """`dataset` in a random order from `seed`. A class-sorted source written in its own order gives class-sorted
    chunks, and a streaming reader mixes only a few chunks at a time (each worker reads its chunks one after
    the other): the batches of a class-folder ImageNet would hold one or two classes each. Shuffled once
    here, every chunk holds every class in proportion, whatever the reader's shuffle."""
    import torch
    from torch.utils.data import Subset

    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    shuffled = Subset(dataset, order)
    if hasattr(dataset, "samples"):  # keep the files' own bytes: the files, in the new order
        shuffled.samples = [dataset.samples[i] for i in order]
    return shuffled


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@exit_on_user_error
def main(argv: list[str]) -> None:
    if {"-h", "--help"} & set(argv):
        print(__doc__)
        return
    args, overrides = parse(argv)
    out = Path(args["out"]).expanduser().resolve()
    overwrite = args.get("overwrite", "false").lower() == "true"
    from selfsup.data.layout import SHARD_META

    if (out / SHARD_META).is_file() and not overwrite:
        print(f"{out} already holds shards ({tree_bytes(out):,} bytes); pass overwrite=true to write them again")
        return
    from rich.progress import track

    from selfsup.checks.data import check_data_root
    from selfsup.config import compose_train
    from selfsup.data.datasets import build_datasets
    from selfsup.data.shards import encoded_samples, write_meta, write_split

    cfg = compose_train(overrides, output_dir=out)
    check_data_root(cfg.data)
    pretrain, labelled, val = build_datasets(cfg.data)
    splits = {"train": pretrain, "val": val}
    if labelled is not None and labelled is not pretrain:
        splits["labelled"] = labelled
    limit = int(args["limit"]) if args.get("limit") else None
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # what an interrupted run left
    labels, skipped = {}, []
    for split, dataset in splits.items():
        if dataset is None:
            continue
        dataset = write_order(spread(dataset, limit), int(args.get("seed", 0)))
        samples = encoded_samples(dataset, cfg.data.skip_corrupt, skipped)
        labels[split] = write_split(
            track(samples, total=len(dataset), description=f"{split:>8}"),
            partial / split,
            chunk_bytes=f"{int(args.get('chunk_mb', 64))}MB",
        )
    classes = list(getattr(labelled, "classes", None) or []) if labelled is not None else []
    if not classes and labels.get("val"):  # labelled but unnamed classes (digits): their numbers
        classes = [str(label) for label in range(max(labels["val"]) + 1)]
    write_meta(partial, classes, labels, source=" ".join(overrides))
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    counts = ", ".join(f"{split} {len(split_labels):,}" for split, split_labels in labels.items())
    print(f"wrote {out}: {counts} images, {len(classes)} classes, {tree_bytes(out):,} bytes")
    if skipped:
        print(f"left out {len(skipped)} unreadable images (data.skip_corrupt=true), e.g. {', '.join(skipped[:3])}")
    print(f"train from it: python train.py data=shards data.root={out}")


if __name__ == "__main__":
    main(sys.argv[1:])
