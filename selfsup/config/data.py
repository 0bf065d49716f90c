"""Schemas of the data and augmentation groups."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from omegaconf import MISSING

from selfsup.config.registry import schema


@schema("data/base")
@dataclass
class DataConfig:
    name: str = MISSING
    root: Optional[str] = None
    resolution: Optional[int] = MISSING  # null: inferred from the first training image
    num_classes: Optional[int] = MISSING  # null: inferred from the dataset
    mean: List[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: List[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    batch_size: int = 256  # per device
    global_batch_size: Optional[int] = None  # experiment= recipes: the published batch over all devices, which
    # batch_size x devices x nodes x accumulation must equal
    num_workers: Optional[int] = None  # null: derived from the CPUs available per device
    pin_memory: bool = True
    download: bool = False
    class_list: Optional[str] = None  # imagenet100: file naming the 100 classes
    knn_bank_size: Optional[int] = None  # cap on training images in the kNN memory bank
    skip_corrupt: bool = False
    # What augmentations may do without changing an image's label; every augmentation reads these.
    min_crop_scale: float = 0.0  # smallest crop area that still shows the object (digits: 0.4)
    flip: bool = True  # False where a mirror image changes the label (digits, text)
    decode_on_gpu: bool = False  # folder/imagenet JPEGs: workers read bytes, nvJPEG decodes on the
    # GPU, crop/flip/colour ops follow there (implies augmentation.on_device)


@schema("data/shards")
@dataclass
class ShardsDataConfig(DataConfig):
    """data=shards: LitData chunks written by scripts/make_shards.py, in a local directory or object storage."""

    shuffle_seed: Optional[int] = (
        MISSING  # the pretraining order, the same on every rank (null: 0); a resume replays it
    )
    cache_dir: Optional[str] = None  # remote data.root: where downloaded chunks are kept (null: LitData's default)


@dataclass
class ViewConfig:
    crop_scale: List[float] = field(default_factory=lambda: [0.08, 1.0])
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    solarize_p: float = 0.0


@schema("augmentation/base")
@dataclass
class AugmentationConfig:
    name: str = MISSING
    resolution: int = MISSING
    mean: List[float] = MISSING
    std: List[float] = MISSING
    blur: bool = MISSING  # blur only helps at resolutions where it is not a smear
    views: List[ViewConfig] = MISSING
    min_crop_scale: float = MISSING  # floor on every view's crop_scale[0]
    flip: bool = MISSING  # False disables every view's flip
    on_device: bool = MISSING  # workers only crop + flip (uint8); colour jitter, grayscale, blur,
    # solarize and normalisation run batched on the training device


@dataclass
class CropViewConfig(ViewConfig):
    resolution: Optional[int] = None  # px side; null: the augmentation's resolution (a global view),
    # set (smaller): a local view (multi-crop)


@schema("augmentation/multicrop")
@dataclass
class MultiCropConfig(AugmentationConfig):
    """Multi-crop (Caron et al. 2020/2021): global views at `resolution`, then local views at their own,
    smaller one; each resolution is one batch (one backbone forward)."""

    views: List[CropViewConfig] = MISSING
    local_resolution: int = MISSING
    global_crop_scale: List[float] = MISSING
    local_crop_scale: List[float] = MISSING
