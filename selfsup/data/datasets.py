"""Raw datasets: each yields (PIL image, integer label). Transforms are applied by the data module.

Every dataset is checked when it is built, so a wrong root or layout fails with one line that
names the path and the layout expected, not a traceback from deep inside torchvision."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import ConcatDataset, Dataset
from torchvision import datasets as tvd

from selfsup.data.layout import FOLDER_LAYOUT
from selfsup.errors import UserError

IMAGE_EXTENSIONS = tvd.folder.IMG_EXTENSIONS


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


def build_datasets(cfg) -> tuple[Dataset, Dataset, Dataset]:
    """Returns (pretrain, labelled_train, val): pretraining images, the labelled training images
    the kNN bank and linear probe are fitted on, and the held-out evaluation split."""
    name = cfg.name
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
        f"unknown dataset '{name}': use data=digits|cifar10|cifar100|stl10|imagenet|imagenet100|folder"
    )


def first_image_size(dataset: Dataset) -> int:
    image, _ = dataset[0]
    return min(image.size)
