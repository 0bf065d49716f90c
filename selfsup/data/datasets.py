"""Raw datasets: each yields (PIL image, integer label). Transforms are applied by the data module.

Every dataset is checked when it is built, so a wrong root or layout fails with one line that
names the path and the layout expected, not a traceback from deep inside torchvision."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import ConcatDataset, Dataset
from torchvision import datasets as tvd

from selfsup.data.layout import FOLDER_LAYOUT, IMAGE_SUFFIXES, IMAGES_LAYOUT, LIST_SUFFIXES
from selfsup.errors import UserError


class DigitsDataset(Dataset):
    """sklearn's bundled 8x8 handwritten digits as RGB PIL images; a fixed stratified 80/20 split."""

    def __init__(self, train: bool):
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
        train_idx, val_idx = train_test_split(
            np.arange(len(images)), test_size=0.2, stratify=digits.target, random_state=0
        )
        idx = train_idx if train else val_idx
        self.images, self.targets = images[idx], digits.target[idx].tolist()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return Image.fromarray(self.images[i], mode="L").convert("RGB"), self.targets[i]


SKIPPED_IMAGES_FILE = "skipped_images.txt"  # in the run directory: one unreadable image per line


class CheckedImageFolder(tvd.ImageFolder):
    """ImageFolder that names an unreadable file, or skips it when asked to.

    Skipped files are appended to `skip_log` (set by `log_skipped_to`, a file in the run directory)
    so that every DataLoader worker process and every rank adds to one list, which the pipeline
    reports at the end (`read_skipped_images`); `skipped` only sees this process's share."""

    def __init__(self, root: str, skip_corrupt: bool = False, classes: list[str] | None = None):
        self._only_classes = classes
        super().__init__(root)
        self.skip_corrupt = skip_corrupt
        self.skipped: set[str] = set()
        self.skip_log: str | None = None

    def log_skipped_to(self, path) -> None:
        """Record skipped files in `path` from now on (also those skipped before); call before the
        loaders start their worker processes."""
        self.skip_log = str(path)
        for skipped in sorted(self.skipped):
            self._append_skip(skipped)

    def _append_skip(self, path: str) -> None:
        if self.skip_log:
            with open(self.skip_log, "a") as f:  # one short O_APPEND write per file: safe across processes
                f.write(path + "\n")

    def _skip(self, path: str) -> None:
        if path not in self.skipped:
            self.skipped.add(path)
            self._append_skip(path)

    def find_classes(self, directory):
        classes, class_to_idx = super().find_classes(directory)
        if self._only_classes is None:
            return classes, class_to_idx
        missing = sorted(set(self._only_classes) - set(classes))
        if missing:
            raise UserError(f"{directory} lacks {len(missing)} listed classes, e.g. {missing[:3]}")
        classes = sorted(self._only_classes)
        return classes, {c: i for i, c in enumerate(classes)}

    def __getitem__(self, index):
        for offset in range(len(self.samples)):
            path, target = self.samples[(index + offset) % len(self.samples)]
            try:
                with Image.open(path) as img:
                    return img.convert("RGB"), target
            except (OSError, SyntaxError, ValueError) as err:
                if not self.skip_corrupt:
                    raise UserError(
                        f"cannot read image {path} ({err}); fix or delete it, "
                        "or set data.skip_corrupt=true to skip unreadable images"
                    ) from None
                self._skip(path)
        raise UserError(f"no readable image in {self.root}")


NO_LABEL = -1  # the label of an unlabelled image (the online probe's cross-entropy ignores it)


class ImageFiles(CheckedImageFolder):
    """data=images: every image under a folder tree (any nesting; hidden files and folders left out),
    or every path listed in a .txt/.csv file (a CSV's first column; relative to the file's folder), each
    labelled NO_LABEL. Unreadable images are named or skipped as in CheckedImageFolder."""

    def find_classes(self, directory):
        return [], {}

    @staticmethod
    def make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        paths = _listed_images(Path(directory)) if Path(directory).is_file() else _images_under(Path(directory))
        if not paths:
            raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {directory}: expected {IMAGES_LAYOUT}")
        return [(str(path), NO_LABEL) for path in paths]


def _images_under(root: Path) -> list[Path]:
    found = []
    for folder, subfolders, files in os.walk(root, followlinks=True):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        found += [
            Path(folder) / f for f in sorted(files) if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES)
        ]
    return found


def _listed_images(listing: Path) -> list[Path]:
    """The image paths a .txt (one per line) or .csv (first column; a header row is skipped) file lists."""
    if listing.suffix.lower() not in LIST_SUFFIXES:
        raise UserError(
            f"data.root={listing} is a file but not a list of images: use a {' or '.join(LIST_SUFFIXES)} "
            "file with one image path per line, or a folder"
        )
    if listing.suffix.lower() == ".csv":
        with open(listing, newline="") as f:
            entries = [row[0].strip() for row in csv.reader(f) if row and row[0].strip()]
        if entries and not entries[0].lower().endswith(IMAGE_SUFFIXES):
            entries = entries[1:]  # a header
    else:
        entries = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    paths = [(listing.parent / entry).expanduser() for entry in entries]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise UserError(
            f"{len(missing)} of the {len(paths)} images listed in {listing} do not exist, e.g. "
            f"{missing[0]}: fix the list (relative paths start at the list's folder)"
        )
    return paths


def read_skipped_images(path) -> list[str]:
    """The unreadable images listed in `path` (see CheckedImageFolder), each once, in order."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    return list(dict.fromkeys(line for line in lines if line.strip()))


def _image_folder(split_dir: Path, cfg, classes=None) -> CheckedImageFolder:
    if not split_dir.is_dir():
        raise UserError(f"data root {split_dir.parent} has no {split_dir.name}/ folder: expected {FOLDER_LAYOUT}")
    try:
        return CheckedImageFolder(str(split_dir), skip_corrupt=cfg.skip_corrupt, classes=classes)
    except FileNotFoundError:
        raise UserError(f"no images found under {split_dir}: expected {FOLDER_LAYOUT}") from None


def _check_root(root: str | None, what: str) -> Path:
    if not root:
        raise UserError(f"data.root is not set: point it at {what}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise UserError(f"data root {path} does not exist: expected {what}")
    return path


def _torchvision(cls, root: str, download: bool, name: str, **kwargs) -> Dataset:
    try:
        return cls(root, download=download, **kwargs)
    except RuntimeError as err:
        raise UserError(
            f"{name} not found under {root} ({err}): set data.download=true if this machine is "
            f"online, or data.root=<dir holding the torchvision {name} files>"
        ) from None
    except OSError as err:  # URLError, socket errors: data.download=true without a network
        raise UserError(
            f"cannot download {name} to {root} ({type(err).__name__}: {str(err).splitlines()[0][:120]}): this "
            f"machine is offline or the server unreachable; download it elsewhere and pass data.root=<that dir>"
        ) from None


def build_datasets(cfg, eval_data=None) -> tuple[Dataset, Dataset | None, Dataset | None]:
    """Returns (pretrain, labelled_train, val): pretraining images, the labelled training images
    the kNN bank and linear probe are fitted on, and the held-out evaluation split. `eval_data` (the
    data config eval.data names): the labelled splits come from it; data=images without it has none."""
    if eval_data is not None:
        _, labelled, val = build_datasets(eval_data)
        if labelled is None:
            raise UserError(
                f"eval.data={eval_data.root} is data=images, which has no labels: point eval.data at "
                f"labelled data ({FOLDER_LAYOUT}, or a dataset name such as cifar10)"
            )
        return build_datasets(cfg)[0], labelled, val
    name = cfg.name
    if name == "images":
        root = Path(str(cfg.root)).expanduser() if cfg.root else None
        if root is None or not root.exists():
            raise UserError(f"data.root={cfg.root} does not exist: point it at {IMAGES_LAYOUT}")
        return ImageFiles(str(root), skip_corrupt=cfg.skip_corrupt), None, None
    if name == "shards":  # streamed LitData chunks (scripts/make_shards.py), local or object storage
        from selfsup.data.shards import shard_datasets

        return shard_datasets(cfg)
    if name == "digits":
        train = DigitsDataset(train=True)
        return train, train, DigitsDataset(train=False)
    if name in ("cifar10", "cifar100"):
        cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
        train = _torchvision(cls, cfg.root, cfg.download, name, train=True)
        return train, train, _torchvision(cls, cfg.root, cfg.download, name, train=False)
    if name == "stl10":
        labelled = _torchvision(tvd.STL10, cfg.root, cfg.download, name, split="train")
        unlabelled = _torchvision(tvd.STL10, cfg.root, cfg.download, name, split="unlabeled")
        val = _torchvision(tvd.STL10, cfg.root, cfg.download, name, split="test")
        return ConcatDataset([labelled, unlabelled]), labelled, val
    if name in ("imagenet", "imagenet100", "folder"):
        root = _check_root(cfg.root, FOLDER_LAYOUT)
        classes = None
        if cfg.class_list:
            classes = Path(cfg.class_list).read_text().split()
        train = _image_folder(root / "train", cfg, classes)
        val = _image_folder(root / "val", cfg, classes)
        return train, train, val
    raise UserError(
        f"unknown dataset '{name}': use data=digits|cifar10|cifar100|stl10|imagenet|imagenet100|folder|images|shards"
    )


def first_image_size(dataset: Dataset) -> int:
    image, _ = dataset[0]
    return min(image.size)
