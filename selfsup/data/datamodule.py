"""One LightningDataModule for every dataset: multi-view batches for pretraining and, for the
kNN monitor and the final evaluation, augmentation-free batches of the labelled splits."""

from __future__ import annotations

import os

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset, Subset

from selfsup.data.datasets import build_datasets, first_image_size
from selfsup.data.shards import ShardImages
from selfsup.data.transforms import MultiViewTransform, eval_transform
from selfsup.errors import UserError

MAX_INFERRED_RESOLUTION = 224
UNLABELLED_PICTURE_IMAGES = 1000  # data=images without eval.data: the images neighbours.png and embedding.png show
MAX_UPSCALE = 4  # data.resolution at most this many times the images' own side (digits: 8 px -> 32)


class TransformedDataset(Dataset):
    def __init__(self, dataset: Dataset, transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        image, label = self.dataset[i]
        return self.transform(image), label


class EncodedImages(Dataset):
    """data.decode_on_gpu: an image folder's files as raw bytes (1-D uint8 tensors) and labels; the
    training module decodes them on its device (nvJPEG) and crops there."""

    def __init__(self, folder: Dataset):
        if not hasattr(folder, "samples"):
            raise UserError("data.decode_on_gpu=true needs an image-folder dataset: data=folder|imagenet|imagenet100")
        self.samples = folder.samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        from torchvision.io import read_file

        path, label = self.samples[i]
        return read_file(path), label


def collate_encoded(items):
    return [data for data, _ in items], torch.tensor([label for _, label in items])


def data_values(data_cfg, datasets: tuple[Dataset, Dataset, Dataset], eval_data=None) -> dict:
    """What the data config leaves to the data, {"resolution": ..., "num_classes": ...}, from the
    datasets `build_datasets(data_cfg)` returned; a set value is kept (a resolution far above the
    images' own is refused); with `eval_data` (the data config eval.data names, which the labelled splits
    come from) its classes. Nothing is written: the caller merges the values into the config it uses."""
    pretrain, labelled, _ = datasets
    native = first_image_size(pretrain)
    resolution = data_cfg.resolution
    if resolution is None:
        resolution = min(native, MAX_INFERRED_RESOLUTION)
    elif resolution > MAX_UPSCALE * native:  # upsampled pixels: compute spent on no information
        raise UserError(
            f"data.resolution={resolution} is over {MAX_UPSCALE}x the {native} px images of "
            f"{data_cfg.name}: use data.resolution<={MAX_UPSCALE * native} (null: the images' own size)"
        )
    scored = eval_data if eval_data is not None else data_cfg  # whose classes the labelled splits have
    num_classes = scored.num_classes if labelled is not None else None  # (data=images alone: no classes)
    if labelled is not None and num_classes is None:
        num_classes = len(labelled.classes)
    return {"resolution": resolution, "num_classes": num_classes}


def completed_config(cfg: DictConfig, datasets: tuple[Dataset, Dataset, Dataset], eval_data=None) -> DictConfig:
    """A copy of the train config `cfg` with `data_values` in data.resolution / num_classes; other
    groups read those by interpolation, so build everything from the copy. `cfg` stays as it was."""
    return OmegaConf.merge(cfg, {"data": data_values(cfg.data, datasets, eval_data)})


class SSLDataModule(pl.LightningDataModule):
    def __init__(self, data_cfg, augmentation_cfg, devices_per_node: int = 1, datasets=None):
        """`datasets`: `build_datasets(data_cfg)` when the caller built them already, to complete the
        config from them first (`data_values`, `completed_config`; `build_data` does all three)."""
        super().__init__()
        self.cfg, self.augmentation = data_cfg, augmentation_cfg
        self.pretrain, self.labelled, self.val = datasets if datasets is not None else build_datasets(data_cfg)
        self.num_workers = self._num_workers(devices_per_node)
        if data_cfg.get("decode_on_gpu", False):
            EncodedImages(self.pretrain)  # fails now, in one line, if the dataset is not an image folder
        if augmentation_cfg is not None and len(self.pretrain) < data_cfg.batch_size:  # (None: evaluation only)
            raise UserError(
                f"data.batch_size={data_cfg.batch_size} exceeds the {len(self.pretrain)} training "
                f"images of {data_cfg.name}; with drop_last no batch would remain: lower data.batch_size"
            )

    def _num_workers(self, devices_per_node: int) -> int:
        if self.cfg.num_workers is not None:
            return self.cfg.num_workers
        cpus = len(os.sched_getaffinity(0))
        return max(1, min(8, cpus // max(1, devices_per_node) - 1))

    def _loader(self, dataset: Dataset, batch_size: int, train: bool, collate_fn=None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train,
            drop_last=train,
            num_workers=self.num_workers,
            pin_memory=self.cfg.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_fn,
        )

    def _eval_dataset(self, dataset: Dataset) -> Dataset:
        return TransformedDataset(dataset, eval_transform(self.cfg.resolution, self.cfg.mean, self.cfg.std))

    def train_dataloader(self) -> DataLoader:
        if self.cfg.get("decode_on_gpu", False):  # workers read bytes; decode, crop and colour on the device
            return self._loader(
                EncodedImages(self.pretrain), self.cfg.batch_size, train=True, collate_fn=collate_encoded
            )
        views = MultiViewTransform(self.augmentation)
        if isinstance(self.pretrain, ShardImages):  # streamed: a share per rank and worker, its position checkpointed
            self._stream = self.pretrain.stream_loader(
                views,
                self.cfg.batch_size,
                self.num_workers,
                self.cfg.shuffle_seed or 0,
                pin_memory=self.cfg.pin_memory and torch.cuda.is_available(),
            )
            if self._stream_position is not None:
                self._stream.load_state_dict(self._stream_position)
            return self._stream
        return self._loader(TransformedDataset(self.pretrain, views), self.cfg.batch_size, train=True)

    # data=shards: the streaming loader's position (epoch, samples yielded) travels in every checkpoint through
    # these two, which Lightning calls on a data module: it saves state_dict() and, on resume, calls
    # load_state_dict() before it asks for the loader (the fit loop's own copy of a loader's state is restored
    # only into a loader made after the restore, and configure_optimizers makes it before, for the schedule).
    _stream = _stream_position = None

    def state_dict(self) -> dict:
        return {"train_stream": self._stream.state_dict()} if self._stream is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        self._stream_position = state_dict.get("train_stream")

    def val_dataloader(self) -> list[DataLoader]:
        """[kNN memory bank (labelled train images), validation images]; none without labelled data."""
        if self.labelled is None:
            return []
        bank = self.labelled
        if self.cfg.knn_bank_size and self.cfg.knn_bank_size < len(bank):
            keep = torch.randperm(len(bank), generator=torch.Generator().manual_seed(0))
            bank = Subset(bank, keep[: self.cfg.knn_bank_size].tolist())
        return [
            self._loader(self._eval_dataset(bank), self.cfg.batch_size, train=False),
            self._loader(self._eval_dataset(self.val), self.cfg.batch_size, train=False),
        ]

    def evaluation_loaders(self) -> tuple[DataLoader, DataLoader]:
        """Full labelled train split and validation split, augmentation-free, for kNN and the
        offline linear probe. Single-process loaders: they run once, after training. Without labelled
        data: one loader, twice, of a seeded sample of the pretraining images (the pictures' neighbours
        and embedding)."""
        make = lambda ds: DataLoader(  # noqa: E731
            self._eval_dataset(ds), batch_size=self.cfg.batch_size, num_workers=self.num_workers
        )
        if self.labelled is None:
            keep = torch.randperm(len(self.pretrain), generator=torch.Generator().manual_seed(0))
            sample = make(Subset(self.pretrain, keep[:UNLABELLED_PICTURE_IMAGES].tolist()))
            return sample, sample
        return make(self.labelled), make(self.val)


def build_data(cfg: DictConfig, eval_data=None, devices_per_node: int = 1) -> tuple[DictConfig, SSLDataModule]:
    """The one way a train config's data is assembled (train.py's planner, the benches, tests): the
    datasets of cfg.data (the labelled splits from `eval_data` when given), the config completed from
    them (`completed_config`, a copy), and the data module of the completed data and augmentation."""
    datasets = build_datasets(cfg.data, eval_data)
    cfg = completed_config(cfg, datasets, eval_data)
    return cfg, SSLDataModule(cfg.data, cfg.augmentation, devices_per_node=devices_per_node, datasets=datasets)
