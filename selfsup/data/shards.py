"""data=shards: images stored as LitData chunks by scripts/make_shards.py and streamed from a local
directory or object storage (s3://, gs://, azure://).

Layout (`selfsup.data.layout.SHARD_LAYOUT`): `<root>/shards.json` (the class names and every split's
labels) and, per split, `<root>/<split>/index.json` + `chunk-*.bin`: `train` (the pretraining images),
`val`, and `labelled` where the labelled training images are not the pretraining ones (STL-10). A
sample is `{"image": the encoded file's bytes as read from disk, "label": int}` (data=images: NO_LABEL).

Pretraining streams `train` through LitData's StreamingDataLoader: each rank and loader worker reads
its own share of the chunks, shuffled per epoch from `data.shuffle_seed`, and the loader's position
(samples yielded, epoch) is part of Lightning's checkpoint (the fit loop saves the state of a loader
that has `state_dict`), so a resumed run gets exactly the batches an uninterrupted one would have.
The kNN bank, the evaluations and the pictures read the splits by index (`ShardImages`), like a folder.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Optional

from PIL import Image
from torch.utils.data import Dataset

from selfsup.data.layout import SHARD_LAYOUT, SHARD_META
from selfsup.errors import UserError

logging.getLogger("litdata").setLevel(logging.WARNING)  # its INFO lines (cache size, mmap mode) on every open


def is_remote(root: str) -> bool:
    return "://" in str(root)  # s3://, gs://, azure://: read through LitData's downloaders


def decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


class DecodedSample:
    """A stored sample -> (transform(PIL image), label); picklable, so loader workers can run it."""

    def __init__(self, transform: Optional[Callable] = None):
        self.transform = transform

    def __call__(self, sample: dict):
        image = decode(sample["image"])
        return (self.transform(image) if self.transform else image), sample["label"]


class ShardImages(Dataset):
    """One split as a map-style dataset of (PIL image, label): the kNN bank, the evaluations and the
    pictures index it like an image folder (LitData reads the chunk holding each index, downloading
    and caching remote chunks); `stream_loader` streams it for pretraining."""

    def __init__(self, url: str, classes: list[str], targets: list[int], cache_dir: Optional[str] = None):
        self.url, self.classes, self.targets, self.cache_dir = url, classes, targets, cache_dir
        self._reader, self._reader_pid = None, None

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        if self._reader is None or self._reader_pid != os.getpid():  # one reader per (worker) process
            from litdata import StreamingDataset

            self._reader = StreamingDataset(self.url, cache_dir=self.cache_dir, transform=DecodedSample())
            self._reader_pid = os.getpid()
        return self._reader[index]

    def __getstate__(self):
        return {**self.__dict__, "_reader": None, "_reader_pid": None}

    def stream_loader(self, transform: Callable, batch_size: int, num_workers: int, seed: int, pin_memory: bool):
        """Batches of (transform(image), label), drop_last, reshuffled each epoch from `seed`; under DDP
        each rank streams a disjoint share. A StreamingDataLoader: its `state_dict` is the position."""
        from litdata import StreamingDataLoader, StreamingDataset

        # item_shuffle_window=0: a full permutation within each chunk. LitData's default permutes blocks of
        # 256 consecutive samples, so a batch of 128 came from one block: from one class, on shards written
        # from a class-sorted source without scripts/make_shards.py's shuffle.
        dataset = StreamingDataset(
            self.url,
            cache_dir=self.cache_dir,
            shuffle=True,
            drop_last=True,
            seed=seed,
            item_shuffle_window=0,
            transform=DecodedSample(transform),
        )
        return StreamingDataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=num_workers,
            drop_last=True,
            pin_memory=pin_memory,
            persistent_workers=num_workers > 0,
        )


def _split_url(root: str, split: str) -> str:
    return f"{root.rstrip('/')}/{split}" if is_remote(root) else str(Path(root).expanduser() / split)


def read_meta(root: str, cache_dir: Optional[str] = None) -> dict:
    """shards.json of a local or remote shard root; UserError when missing or unreadable."""
    if is_remote(root):
        from litdata.streaming.downloader import get_downloader

        local = Path(cache_dir or tempfile.mkdtemp(prefix="selfsup-shards-")) / SHARD_META
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            get_downloader(root, str(local.parent), []).download_file(f"{root.rstrip('/')}/{SHARD_META}", str(local))
        except Exception as err:  # noqa: BLE001 - botocore, obstore and network errors differ per store
            raise UserError(
                f"cannot read {root}/{SHARD_META} ({type(err).__name__}: {str(err)[:120]}): expected "
                f"{SHARD_LAYOUT}; check the URL and the store's credentials"
            ) from None
        path = local
    else:
        path = Path(root).expanduser() / SHARD_META
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise UserError(
            f"cannot read {path} ({type(err).__name__}): data.root must be a shard directory written by "
            f"scripts/make_shards.py, {SHARD_LAYOUT}"
        ) from None


def check_local_split(split_dir: Path, expected: int) -> None:
    """The split's index names chunks that are all there, whole, and hold `expected` samples."""
    try:
        chunks = json.loads((split_dir / "index.json").read_text())["chunks"]
    except (OSError, ValueError, KeyError) as err:
        raise UserError(
            f"shard split {split_dir} has no readable index.json ({type(err).__name__}): "
            "write the shards again with scripts/make_shards.py"
        ) from None
    for chunk in chunks:
        path = split_dir / chunk["filename"]
        size = path.stat().st_size if path.is_file() else None
        if size != chunk["chunk_bytes"]:
            state = "is missing" if size is None else f"has {size} bytes, the index says {chunk['chunk_bytes']}"
            raise UserError(
                f"shard {path} {state}: the shard directory is damaged; copy it again or rewrite it "
                "with scripts/make_shards.py"
            )
    stored = sum(chunk["chunk_size"] for chunk in chunks)
    if stored != expected:
        raise UserError(
            f"{split_dir} holds {stored} images but {SHARD_META} lists {expected}: the shard directory "
            "is damaged or mixed from two writes; rewrite it with scripts/make_shards.py"
        )


def shard_datasets(cfg) -> tuple[ShardImages, ShardImages, ShardImages]:
    """(pretrain, labelled, val) of a shard root, as `build_datasets` returns them."""
    if not cfg.root:
        raise UserError(f"data.root is not set: point it at a shard directory ({SHARD_LAYOUT})")
    root = str(cfg.root)
    meta = read_meta(root, cfg.get("cache_dir"))
    labels = meta.get("labels", {})
    labelled = bool(meta.get("classes"))  # shards of data=images have train only, every label NO_LABEL
    for split in ("train", "val") if labelled else ("train",):
        if not labels.get(split):
            raise UserError(
                f"shard directory {root} has no {split} images: write it again with "
                f"scripts/make_shards.py ({SHARD_LAYOUT})"
            )
    if not is_remote(root):
        for split in labels:
            check_local_split(Path(root).expanduser() / split, len(labels[split]))
    splits = {
        split: ShardImages(_split_url(root, split), meta["classes"], labels[split], cfg.get("cache_dir"))
        for split in labels
    }
    if not labelled:  # as data=images: no kNN monitor; eval.data=<labelled data> scores the backbone
        return splits["train"], None, None
    return splits["train"], splits.get("labelled", splits["train"]), splits["val"]


# -- writing (scripts/make_shards.py) -------------------------------------------------------------


def encoded_samples(dataset: Dataset, skip_corrupt: bool = False, skipped: Optional[list] = None):
    """(encoded bytes, label) of every image of `dataset`: an image folder's files as they are on disk (no
    re-encoding; a file PIL cannot parse is named, or with `skip_corrupt` left out and added to `skipped`);
    decoded datasets (CIFAR, STL-10, digits) as lossless PNG."""
    if hasattr(dataset, "samples"):
        for path, label in dataset.samples:
            data = Path(path).read_bytes()
            if not readable(data):
                if not skip_corrupt:
                    raise UserError(
                        f"cannot read image {path}; fix or delete it, or set data.skip_corrupt=true "
                        "to leave unreadable images out of the shards"
                    )
                if skipped is not None:
                    skipped.append(str(path))
                continue
            yield data, label
        return
    for i in range(len(dataset)):
        image, label = dataset[i]
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        yield buffer.getvalue(), int(label)


def readable(data: bytes) -> bool:
    """Whether PIL can parse the file (its header and structure; no full decode)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        return True
    except Exception:  # noqa: BLE001 - PIL raises many kinds for a damaged file
        return False


def write_split(samples: Iterable[tuple[bytes, int]], out_dir: Path, chunk_bytes: str = "64MB") -> list[int]:
    """Writes `samples` as LitData chunks into `out_dir` (which must not exist); returns their labels."""
    from litdata.streaming.writer import BinaryWriter

    out_dir.mkdir(parents=True)
    writer = BinaryWriter(str(out_dir), chunk_bytes=chunk_bytes)
    labels = []
    for index, (data, label) in enumerate(samples):
        writer.add_item(index, {"image": data, "label": int(label)})
        labels.append(int(label))
    if not labels:
        raise UserError(f"no images to write into {out_dir}")
    writer.done()
    writer.merge()
    return labels


def write_meta(out_dir: Path, classes: list[str], labels: dict[str, list[int]], source: str) -> None:
    (out_dir / SHARD_META).write_text(json.dumps({"source": source, "classes": classes, "labels": labels}))
