"""Schemas of the loss group."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from selfsup.config.registry import schema


@schema("loss/nt_xent")
@dataclass
class NTXentConfig:
    _target_: str = MISSING
    temperature: float = MISSING


@schema("loss/info_nce")
@dataclass
class InfoNCEConfig:
    _target_: str = MISSING
    temperature: float = MISSING


@schema("loss/byol_cosine")
@dataclass
class BYOLLossConfig:
    _target_: str = MISSING


@schema("loss/barlow_twins")
@dataclass
class BarlowTwinsLossConfig:
    _target_: str = MISSING
    lambda_offdiag: float = MISSING
    eps: float = 1.0e-5


@schema("loss/negative_cosine")
@dataclass
class NegativeCosineConfig:
    _target_: str = MISSING


@schema("loss/vicreg")
@dataclass
class VICRegLossConfig:
    _target_: str = MISSING
    invariance_weight: float = MISSING  # lambda
    variance_weight: float = MISSING  # mu
    covariance_weight: float = MISSING  # nu
    gamma: float = MISSING  # target std of every dimension
    eps: float = MISSING


@schema("loss/dino")
@dataclass
class DINOLossConfig:
    _target_: str = MISSING
    output_dim: int = MISSING  # K of DINO's head
    student_temperature: float = MISSING
    teacher_temperature: float = MISSING
    warmup_teacher_temperature: float = MISSING
    warmup_teacher_temperature_epochs: float = MISSING
    center_momentum: float = MISSING


@schema("loss/mae")
@dataclass
class MAELossConfig:
    _target_: str = MISSING
    norm_pix_loss: bool = MISSING  # targets: each patch normalised by its own mean and variance


@schema("loss/mocov3")
@dataclass
class MoCoV3LossConfig:
    _target_: str = MISSING
    temperature: float = MISSING


@schema("loss/cross_entropy")
@dataclass
class CrossEntropyConfig:
    _target_: str = MISSING
    label_smoothing: float = MISSING


@schema("loss/inpainting")
@dataclass
class InpaintingConfig:
    _target_: str = MISSING
    overlap: int = MISSING  # px band inside the mask edge (the paper: 4 at 128 px)
    overlap_weight: float = MISSING
    adversarial: bool = MISSING
    reconstruction_weight: float = MISSING
    adversarial_weight: float = MISSING


@schema("loss/colorization")
@dataclass
class ColorizationLossConfig:
    _target_: str = MISSING
    kind: str = MISSING  # regression | classification (over quantised ab bins)
    regression: str = MISSING  # smooth_l1 | l2, on ab / 110
    bin_size: float = MISSING  # classification: ab grid step
    sigma: float = MISSING  # soft-encoding Gaussian over neighbouring bins
    rebalance: float = MISSING  # lambda: prior mixed with uniform, weights ~ 1 / mixture
    temperature: float = MISSING  # annealed mean when decoding a prediction


@schema("loss/pairwise_margin")
@dataclass
class PairwiseMarginConfig:
    _target_: str = MISSING
    margin: float = MISSING


@schema("loss/swav")
@dataclass
class SwAVLossConfig:
    _target_: str = MISSING
    temperature: float = MISSING  # of the softmax over prototypes that predicts the codes
    epsilon: float = MISSING  # Sinkhorn-Knopp's entropic regularisation
    sinkhorn_iterations: int = MISSING


@schema("loss/nnclr")
@dataclass
class NNCLRLossConfig:
    _target_: str = MISSING
    temperature: float = MISSING
