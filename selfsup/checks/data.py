"""The data's checks: an image folder's root and layout, the normalisation's values."""
from __future__ import annotations

from pathlib import Path

from selfsup.data.layout import FOLDER_DATASETS, FOLDER_LAYOUT
from selfsup.errors import UserError

IMAGE_CHANNELS = 3  # every dataset is loaded as RGB (digits and grey folders too)


def check_data_root(data) -> None:
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
        raise UserError(f"data.class_list={data.class_list} does not exist: point it at a file naming one class per line")


def check_normalisation(data) -> None:
    for key in ("mean", "std"):
        values = data[key]
        if len(values) != IMAGE_CHANNELS:
            raise UserError(f"data.{key}={list(values)} has {len(values)} values but the images reach the model as "
                            f"{IMAGE_CHANNELS} channels (RGB): give one value per channel, e.g. data.{key}=[a,b,c]")
    if any(v <= 0 for v in data.std):
        raise UserError(f"data.std={list(data.std)} must be > 0 per channel: the images are divided by it")
