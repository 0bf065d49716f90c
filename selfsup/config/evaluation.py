"""Schemas of the eval group: kNN, linear probe and fine-tuning."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import List, Optional

from omegaconf import MISSING


@dataclass
class KNNConfig:
    k: int = MISSING
    temperature: float = MISSING


class LinearSolver(StrEnum):  # an Enum field: Hydra refuses eval.linear.solver=adam at compose time
    lbfgs = "lbfgs"                         # full batch
    sgd = "sgd"                             # mini-batch, for large feature sets


@dataclass
class LinearConfig:
    weight_decays: List[float] = field(default_factory=lambda: [0.0, 1e-5, 1e-4, 1e-3])
    max_iter: int = 200                     # L-BFGS iterations on cached features
    holdout_fraction: float = 0.1           # of train, used to pick the weight decay
    solver: LinearSolver = LinearSolver.lbfgs
    sgd_epochs: int = 100
    sgd_lr: float = 0.1
    sgd_batch_size: int = 1024


@dataclass
class FinetuneConfig:
    epochs: int = MISSING
    lr: float = MISSING                     # head LR per 256 images (scaled by batch / 256)
    backbone_lr_factor: float = MISSING     # backbone LR = factor x head LR
    layer_decay: float = MISSING            # ViTs: block i of L at factor x decay ** (L + 1 - i) (MAE: 0.65-0.75)
    weight_decay: float = MISSING
    momentum: float = MISSING
    batch_size: Optional[int] = MISSING     # null: data.batch_size
    crop_scale: List[float] = MISSING
    flip_p: float = MISSING
    label_smoothing: float = MISSING


@dataclass
class LinearStandardConfig:
    """The papers' linear protocol (selfsup/eval/linear_standard.py): SGD on augmented frozen features."""
    epochs: int = MISSING                   # the papers: 90-100
    lr: float = MISSING                     # per 256 images (scaled by batch / 256), cosine to 0
    momentum: float = MISSING
    weight_decay: float = MISSING
    batch_size: Optional[int] = MISSING     # null: data.batch_size
    crop_scale: List[float] = MISSING
    flip_p: float = MISSING


@dataclass
class EvalConfig:
    name: str = MISSING
    knn: Optional[KNNConfig] = field(default_factory=KNNConfig)
    linear: Optional[LinearConfig] = None   # the fast probe on cached features (linear_protocol: probe_<solver>)
    linear_standard: Optional[LinearStandardConfig] = None  # the papers' protocol (linear_protocol: standard)
    finetune: Optional[FinetuneConfig] = None
    label_fraction: Optional[float] = None  # low-shot: linear and fine-tuning on a class-balanced, seeded part
                                            # of the labelled split (0.01, 0.1); null: all of it
    knn_at_init: bool = True
