"""Schemas of the eval group: kNN, linear probe and fine-tuning."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import List, Optional

from omegaconf import MISSING

from selfsup.config.registry import schema


@dataclass
class KNNConfig:
    k: int = MISSING
    temperature: float = MISSING


class LinearSolver(StrEnum):  # an Enum field: Hydra refuses eval.linear.solver=adam at compose time
    lbfgs = "lbfgs"  # full batch
    sgd = "sgd"  # mini-batch, for large feature sets


@dataclass
class LinearConfig:
    weight_decays: List[float] = field(default_factory=lambda: [0.0, 1e-5, 1e-4, 1e-3])
    max_iter: int = 200  # L-BFGS iterations on cached features
    holdout_fraction: float = 0.1  # of train, used to pick the weight decay
    solver: LinearSolver = LinearSolver.lbfgs
    sgd_epochs: int = 100
    sgd_lr: float = 0.1
    sgd_batch_size: int = 1024


class FinetuneOptimizer(StrEnum):  # an Enum field: Hydra refuses eval.finetune.optimizer=adam at compose time
    sgd = "sgd"  # Nesterov momentum
    adamw = "adamw"


class Interpolation(StrEnum):
    bilinear = "bilinear"
    bicubic = "bicubic"  # MAE, DeiT
    random = "random"  # timm: one of the two per image


@dataclass
class FinetuneConfig:
    """Fine-tuning (selfsup/eval/finetune.py). The fields past label_smoothing default to off, so a recipe
    names only what it uses; eval=finetune_vit names all it uses (MAE's recipe)."""

    epochs: int = MISSING
    lr: float = MISSING  # head LR per 256 images (scaled by batch / 256)
    backbone_lr_factor: float = MISSING  # backbone LR = factor x head LR
    layer_decay: float = MISSING  # timm's layer groups (param_groups_layer_decay): group g of G at
    # factor x decay ** (G - 1 - g); a ViT's block i of L: decay ** (L + 1 - i)
    weight_decay: float = MISSING  # not on biases, norms, a ViT's position table and CLS token
    batch_size: Optional[int] = MISSING  # null: data.batch_size
    crop_scale: List[float] = MISSING
    flip_p: float = MISSING
    label_smoothing: float = MISSING
    optimizer: FinetuneOptimizer = FinetuneOptimizer.sgd
    momentum: float = 0.9  # optimizer=sgd (Nesterov)
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])  # optimizer=adamw
    warmup_epochs: float = 0.0  # linear from 0, then cosine
    min_lr: float = 0.0  # the cosine's floor (absolute, like MAE's --min_lr)
    interpolation: Interpolation = Interpolation.bilinear  # the crop's (and RandAugment's) resampling
    randaugment: Optional[str] = None  # timm's auto_augment string (MAE: rand-m9-mstd0.5-inc1); null: off
    random_erasing: float = 0.0  # probability of one erased box of per-pixel noise (DeiT, MAE: 0.25)
    mixup: float = 0.0  # mixup's Beta(alpha, alpha); 0: off
    cutmix: float = 0.0  # cutmix's Beta(alpha, alpha); 0: off (both on: one per batch, 50/50)
    drop_path: float = 0.0  # stochastic depth of the last block, from 0 at the first (timm backbones)


@dataclass
class LinearStandardConfig:
    """The papers' linear protocol (selfsup/eval/linear_standard.py): SGD on augmented frozen features."""

    epochs: int = MISSING  # the papers: 90-100
    lr: float = MISSING  # per 256 images (scaled by batch / 256), cosine to 0
    momentum: float = MISSING
    weight_decay: float = MISSING
    batch_size: Optional[int] = MISSING  # null: data.batch_size
    crop_scale: List[float] = MISSING
    flip_p: float = MISSING


@schema("eval/base")
@dataclass
class EvalConfig:
    name: str = MISSING
    knn: Optional[KNNConfig] = field(default_factory=KNNConfig)
    linear: Optional[LinearConfig] = None  # the fast probe on cached features (linear_protocol: probe_<solver>)
    linear_standard: Optional[LinearStandardConfig] = None  # the papers' protocol (linear_protocol: standard)
    finetune: Optional[FinetuneConfig] = None
    label_fraction: Optional[float] = None  # low-shot: linear and fine-tuning on a class-balanced, seeded part
    # of the labelled split (0.01, 0.1); null: all of it
    knn_at_init: bool = True
    data: Optional[str] = None  # labelled data to score on instead of the pretraining data's own
    # splits: a data config name (cifar10) or a labelled folder's root;
    # data=images (no labels) is scored only with it
