"""The data's checks: an image folder's root and layout, the normalisation's values."""

from __future__ import annotations

from pathlib import Path

from selfsup.data.layout import (
    FOLDER_DATASETS,
    FOLDER_LAYOUT,
    IMAGES_LAYOUT,
    LIST_SUFFIXES,
    SHARD_LAYOUT,
    SHARD_META,
    UNLABELLED_DATASETS,
)
from selfsup.errors import UserError

IMAGE_CHANNELS = 3  # every dataset is loaded as RGB (digits and grey folders too)


def check_data_root(data) -> None:
    if data.name == "shards":
        return _check_shard_root(data.root)
    if data.name in UNLABELLED_DATASETS:
        return _check_images_root(data.root)
    if data.name not in FOLDER_DATASETS:
        return  # torchvision datasets name their own missing files when they are built
    if not data.root:
        raise UserError(f"data.root is not set: pass data.root=<a folder laid out as {FOLDER_LAYOUT}>")
    root = Path(str(data.root)).expanduser()
    if not root.is_dir():
        what = "is a file, not a directory" if root.exists() else "does not exist"
        raise UserError(f"data root {root} {what}: point data.root at a folder laid out as {FOLDER_LAYOUT}")
    if not any(root.iterdir()):
        raise UserError(f"data root {root} is empty: point data.root at a folder laid out as {FOLDER_LAYOUT}")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise UserError(f"data root {root} has no {split}/ folder: expected {FOLDER_LAYOUT}")
    if data.class_list and not Path(str(data.class_list)).expanduser().is_file():
        raise UserError(
            f"data.class_list={data.class_list} does not exist: point it at a file naming one class per line"
        )


def _check_images_root(root) -> None:
    if not root:
        raise UserError(f"data.root is not set: pass data.root=<{IMAGES_LAYOUT}>")
    path = Path(str(root)).expanduser()
    if not path.exists():
        raise UserError(f"data root {path} does not exist: point data.root at {IMAGES_LAYOUT}")
    if path.is_file() and path.suffix.lower() not in LIST_SUFFIXES:
        raise UserError(
            f"data root {path} is a file but not a {' or '.join(LIST_SUFFIXES)} list of image paths: "
            f"point data.root at {IMAGES_LAYOUT}"
        )
    if path.is_dir() and not any(path.iterdir()):
        raise UserError(f"data root {path} is empty: point data.root at {IMAGES_LAYOUT}")


def eval_data(cfg):
    """The data config eval.data names (checked: labelled, and where it says), or None when it is not set."""
    choice = (cfg.get("eval") or {}).get("data")
    if choice is None:
        return None
    from selfsup.config.data_choice import data_config

    data = data_config(str(choice), cfg.paths)
    if data.name in UNLABELLED_DATASETS:
        raise UserError(
            f"eval.data={choice} has no labels: name labelled data, a folder laid out as {FOLDER_LAYOUT} "
            "or a dataset such as cifar10"
        )
    try:
        check_data_root(data)
    except UserError as err:
        raise UserError(f"eval.data={choice}: {err}") from None
    return data


def _check_shard_root(root) -> None:
    """A local shard root holds shards.json and the train index (val, the chunks and the labels are checked
    when the datasets are built); a remote one (s3://...) is checked when it is read."""
    if not root:
        raise UserError(f"data.root is not set: pass data.root=<a shard directory or s3://... URL: {SHARD_LAYOUT}>")
    if "://" in str(root):
        return
    path = Path(str(root)).expanduser()
    if not path.is_dir():
        what = "is a file, not a directory" if path.exists() else "does not exist"
        raise UserError(f"shard root {path} {what}: write shards with scripts/make_shards.py ({SHARD_LAYOUT})")
    for needed in (SHARD_META, "train/index.json"):
        if not (path / needed).is_file():
            raise UserError(
                f"shard root {path} has no {needed}: it is empty, damaged or not a shard directory; "
                f"write it with scripts/make_shards.py ({SHARD_LAYOUT})"
            )


def check_normalisation(data) -> None:
    for key in ("mean", "std"):
        values = data[key]
        if len(values) != IMAGE_CHANNELS:
            raise UserError(
                f"data.{key}={list(values)} has {len(values)} values but the images reach the model as "
                f"{IMAGE_CHANNELS} channels (RGB): give one value per channel, e.g. data.{key}=[a,b,c]"
            )
    if any(v <= 0 for v in data.std):
        raise UserError(f"data.std={list(data.std)} must be > 0 per channel: the images are divided by it")
