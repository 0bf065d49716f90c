"""Schemas of the backbone and method groups: the networks and what each method adds to them."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Optional

from omegaconf import MISSING

from selfsup.config.registry import schema
from selfsup.config.training import OptimizerConfig


@schema("backbone/base")
@dataclass
class BackboneConfig:
    name: str = MISSING
    cifar_stem: bool = MISSING
    zero_init_residual: bool = False
    channels_last: bool = True


@schema("backbone/vit")
@dataclass
class ViTBackboneConfig(BackboneConfig):
    channels_last: bool = False  # a ViT's only convolution is the patch embedding: no gain
    image_size: Optional[int] = "${data.resolution}"
    patch_size: Optional[int] = None  # null: from the resolution (16 at 224 px, 8 at 96 px, 4 at 32 px)
    pool: str = "token"  # feature for kNN / linear / fine-tuning: token (CLS) | mean (of patches)
    pos_embed: str = "learn"  # learn | sincos (fixed 2-D sine-cosine table, MAE / MoCo v3)
    drop_path_rate: float = 0.0  # stochastic depth, linearly increasing over the blocks


@dataclass
class HeadConfig:
    hidden_dim: int = MISSING
    output_dim: int = MISSING
    num_layers: int = MISSING
    batch_norm: bool = True
    last_batch_norm: bool = False


class EvalEncoder(StrEnum):  # an Enum field: Hydra refuses method.eval_encoder=teachr at compose time
    online = "online"  # the encoder gradients train (student, query encoder)
    momentum = "momentum"  # its EMA copy (DINO's teacher, MoCo's key encoder, BYOL's target)


@dataclass
class MethodConfig:
    _target_: str = MISSING
    name: str = MISSING
    primary_eval: str = "linear"  # the evaluation the method's paper leads with (results.json): linear | finetune
    evaluation_input: Optional[str] = None  # f(images, mean, std) fed to the backbone in every evaluation
    # (colorization: its L-channel input); null: the images


@schema("method/simclr")
@dataclass
class SimCLRConfig(MethodConfig):
    projector: HeadConfig = field(default_factory=HeadConfig)


@schema("method/mocov2")
@dataclass
class MoCoV2Config(MethodConfig):
    projector: HeadConfig = field(default_factory=HeadConfig)
    queue_size: int = MISSING  # K negatives; a multiple of the global batch
    momentum: float = MISSING  # key encoder EMA
    momentum_cosine: bool = MISSING  # anneal the momentum to 1 over training (cosine)
    eval_encoder: EvalEncoder = MISSING  # which encoder is evaluated and exported
    symmetric: bool = MISSING  # both view orders (MoCo v2 itself: one)


@schema("method/byol")
@dataclass
class BYOLConfig(MethodConfig):
    projector: HeadConfig = field(default_factory=HeadConfig)
    predictor: HeadConfig = field(default_factory=HeadConfig)
    momentum: float = MISSING  # target EMA, base of the schedule
    momentum_cosine: bool = MISSING  # cosine from `momentum` to 1 over training
    eval_encoder: EvalEncoder = MISSING  # which encoder is evaluated and exported


@schema("method/barlow_twins")
@dataclass
class BarlowTwinsConfig(MethodConfig):
    projector: HeadConfig = field(default_factory=HeadConfig)


@schema("method/simsiam")
@dataclass
class SimSiamConfig(MethodConfig):
    projector: HeadConfig = field(default_factory=HeadConfig)
    predictor: HeadConfig = field(default_factory=HeadConfig)
    fixed_predictor_lr: bool = MISSING  # the predictor keeps the base LR, unscheduled (the paper's 68.1%)


@schema("method/vicreg")
@dataclass
class VICRegConfig(MethodConfig):
    expander: HeadConfig = field(default_factory=HeadConfig)


@dataclass
class DINOHeadConfig:
    hidden_dim: int = MISSING
    bottleneck_dim: int = MISSING
    output_dim: int = MISSING  # K, the prototypes the teacher's softmax is over
    num_layers: int = MISSING
    batch_norm: bool = MISSING
    norm_last_layer: bool = MISSING  # freeze the weight-normalised last layer's norm at 1 (stabler)


@schema("method/dino")
@dataclass
class DINOConfig(MethodConfig):
    head: DINOHeadConfig = field(default_factory=DINOHeadConfig)
    momentum: float = MISSING  # teacher EMA, base of the schedule
    momentum_cosine: bool = MISSING  # cosine from `momentum` to 1 over training
    eval_encoder: EvalEncoder = MISSING  # which encoder is evaluated and exported
    freeze_last_layer_epochs: int = MISSING  # the head's last layer gets no update for this many epochs


@dataclass
class ClassifierHeadConfig:
    hidden_dim: int = MISSING
    num_layers: int = MISSING  # 1: a linear classifier
    batch_norm: bool = MISSING


@schema("method/rotnet")
@dataclass
class RotNetConfig(MethodConfig):
    all_rotations: bool = MISSING  # every image in all 4 rotations (4x batch); false: one random k
    head: ClassifierHeadConfig = field(default_factory=ClassifierHeadConfig)


@schema("method/jigsaw")
@dataclass
class JigsawConfig(MethodConfig):
    num_permutations: int = MISSING  # a stored set: 100, 1000 or 2000
    tile_size: Optional[int] = MISSING  # px; null: 3/4 of the grid cell, the rest is jitter
    jitter: bool = MISSING
    color_drop: bool = MISSING  # one random channel per tile (blocks chromatic aberration)
    tile_dim: int = MISSING  # per-tile projection, concatenated over the 9 tiles
    head: ClassifierHeadConfig = field(default_factory=ClassifierHeadConfig)


@dataclass
class MaskConfig:
    kind: str = MISSING  # central | random_block | random_region
    area: float = MISSING  # fraction of the image hidden
    block_size: Optional[int] = MISSING  # random_region block side in px; null: 1/16 of the short side


@dataclass
class DecoderConfig:
    start_size: int = MISSING
    width: int = MISSING
    min_width: int = MISSING


@dataclass
class DiscriminatorConfig:
    width: int = MISSING
    max_width: int = MISSING
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)


@schema("method/context_encoder")
@dataclass
class ContextEncoderConfig(MethodConfig):
    mask: MaskConfig = field(default_factory=MaskConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)  # when loss.adversarial
    image_every_n_epochs: int = MISSING  # <run dir>/images/epoch_XXX.png (and the last epoch)
    image_grid_size: int = MISSING  # images per row of the grid


@schema("method/colorization")
@dataclass
class ColorizationConfig(MethodConfig):
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    output_stride: int = MISSING  # predict colour at resolution / output_stride (the paper: 4)
    image_every_n_epochs: int = MISSING
    image_grid_size: int = MISSING


@dataclass
class MAEDecoderConfig:
    width: int = MISSING
    depth: int = MISSING
    heads: int = MISSING


@schema("method/mae")
@dataclass
class MAEConfig(MethodConfig):
    primary_eval: str = MISSING
    mask_ratio: float = MISSING  # fraction of each image's patches hidden from the encoder
    decoder: MAEDecoderConfig = field(default_factory=MAEDecoderConfig)
    image_every_n_epochs: int = MISSING  # <run dir>/images/epoch_XXX.png: input / masked / reconstruction
    image_grid_size: int = MISSING


@schema("method/mocov3")
@dataclass
class MoCoV3Config(MethodConfig):
    projector: HeadConfig = field(default_factory=HeadConfig)
    predictor: HeadConfig = field(default_factory=HeadConfig)
    momentum: float = MISSING  # momentum encoder EMA, base of the schedule
    momentum_cosine: bool = MISSING  # cosine from `momentum` to 1 over training
    eval_encoder: EvalEncoder = MISSING  # which encoder is evaluated and exported
    freeze_patch_embed: bool = MISSING  # ViTs: a fixed random patch projection (stabilises training)


@schema("method/swav")
@dataclass
class SwAVConfig(MethodConfig):
    projector: HeadConfig = field(default_factory=HeadConfig)
    num_prototypes: int = MISSING  # K unit prototypes (weight-normalised, norm fixed at 1)
    freeze_prototypes_epochs: int = MISSING  # the prototypes get no update for this many epochs
    queue_length: int = MISSING  # past global-view projections in the Sinkhorn problem; 0: none
    queue_start_epoch: int = MISSING  # the queue fills from this epoch on, and joins once full


@schema("method/nnclr")
@dataclass
class NNCLRConfig(MethodConfig):
    projector: HeadConfig = field(default_factory=HeadConfig)
    predictor: HeadConfig = field(default_factory=HeadConfig)
    queue_size: int = MISSING  # the support set; a multiple of the global batch
