"""Structured-config schemas: every group's YAML extends one of these, so a typo'd key or a
value of the wrong type fails when Hydra composes the config, before anything is built.

YAML files pull their schema with `defaults: [/schema/<group>/<name>@_here_, _self_]`.
Custom resolvers used by the YAML tree are registered here too.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


# --- data & augmentation -------------------------------------------------------------------
@dataclass
class DataConfig:
    name: str = MISSING
    root: Optional[str] = None
    resolution: Optional[int] = MISSING     # null: inferred from the first training image
    num_classes: Optional[int] = MISSING    # null: inferred from the dataset
    mean: List[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: List[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    batch_size: int = 256                   # per device
    num_workers: Optional[int] = None       # null: derived from the CPUs available per device
    pin_memory: bool = True
    download: bool = False
    class_list: Optional[str] = None        # imagenet100: file naming the 100 classes
    knn_bank_size: Optional[int] = None     # cap on training images in the kNN memory bank
    skip_corrupt: bool = False
    # What augmentations may do without changing an image's label; every augmentation reads these.
    min_crop_scale: float = 0.0             # smallest crop area that still shows the object (digits: 0.4)
    flip: bool = True                       # False where a mirror image changes the label (digits, text)
    decode_on_gpu: bool = False             # folder/imagenet JPEGs: workers read bytes, nvJPEG decodes on the
                                            # GPU, crop/flip/colour ops follow there (implies augmentation.on_device)


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


@dataclass
class AugmentationConfig:
    name: str = MISSING
    resolution: int = MISSING
    mean: List[float] = MISSING
    std: List[float] = MISSING
    blur: bool = MISSING                    # blur only helps at resolutions where it is not a smear
    views: List[ViewConfig] = MISSING
    min_crop_scale: float = MISSING                   # floor on every view's crop_scale[0]
    flip: bool = MISSING                              # False disables every view's flip
    on_device: bool = MISSING               # workers only crop + flip (uint8); colour jitter, grayscale, blur,
                                            # solarize and normalisation run batched on the training device


@dataclass
class CropViewConfig(ViewConfig):
    resolution: Optional[int] = None        # px side; null: the augmentation's resolution (a global view),
                                            # set (smaller): a local view (multi-crop)


@dataclass
class MultiCropConfig(AugmentationConfig):
    """Multi-crop (Caron et al. 2020/2021): global views at `resolution`, then local views at their own,
    smaller one; each resolution is one batch (one backbone forward)."""
    views: List[CropViewConfig] = MISSING
    local_resolution: int = "${local_crop:${data.resolution}}"
    global_crop_scale: List[float] = field(default_factory=lambda: [0.4, 1.0])
    local_crop_scale: List[float] = field(default_factory=lambda: [0.05, 0.4])


# --- model ----------------------------------------------------------------------------------
@dataclass
class BackboneConfig:
    name: str = MISSING
    cifar_stem: bool = MISSING
    zero_init_residual: bool = False
    channels_last: bool = True


@dataclass
class ViTBackboneConfig(BackboneConfig):
    channels_last: bool = False             # a ViT's only convolution is the patch embedding: no gain
    image_size: Optional[int] = "${data.resolution}"
    patch_size: Optional[int] = None        # null: from the resolution (16 at 224 px, 8 at 96 px, 4 at 32 px)
    pool: str = "token"                     # feature for kNN / linear / fine-tuning: token (CLS) | mean (of patches)
    pos_embed: str = "learn"                # learn | sincos (fixed 2-D sine-cosine table, MAE / MoCo v3)
    drop_path_rate: float = 0.0             # stochastic depth, linearly increasing over the blocks


@dataclass
class HeadConfig:
    hidden_dim: int = MISSING
    output_dim: int = MISSING
    num_layers: int = MISSING
    batch_norm: bool = True
    last_batch_norm: bool = False


@dataclass
class MethodConfig:
    _target_: str = MISSING
    name: str = MISSING
    primary_eval: str = "linear"            # the evaluation the method's paper leads with (results.json): linear | finetune


@dataclass
class SimCLRConfig(MethodConfig):
    projector: HeadConfig = field(default_factory=HeadConfig)


@dataclass
class NTXentConfig:
    _target_: str = MISSING
    temperature: float = MISSING


@dataclass
class MoCoV2Config(MethodConfig):
    projector: HeadConfig = field(default_factory=lambda: HeadConfig(hidden_dim=2048, output_dim=128, batch_norm=False))
    queue_size: int = MISSING               # K negatives; a multiple of the global batch
    momentum: float = MISSING               # key encoder EMA
    momentum_cosine: bool = MISSING         # anneal the momentum to 1 over training (cosine)
    symmetric: bool = MISSING               # both view orders (MoCo v2 itself: one)


@dataclass
class BYOLConfig(MethodConfig):
    projector: HeadConfig = field(default_factory=lambda: HeadConfig(hidden_dim=4096, output_dim=256))
    predictor: HeadConfig = field(default_factory=lambda: HeadConfig(hidden_dim=4096, output_dim=256))
    momentum: float = MISSING               # target EMA, base of the schedule
    momentum_cosine: bool = MISSING         # cosine from `momentum` to 1 over training


@dataclass
class BarlowTwinsConfig(MethodConfig):
    projector: HeadConfig = field(
        default_factory=lambda: HeadConfig(hidden_dim=8192, output_dim=8192, num_layers=3)
    )


@dataclass
class SimSiamConfig(MethodConfig):
    projector: HeadConfig = field(default_factory=lambda: HeadConfig(
        hidden_dim=2048, output_dim=2048, num_layers=3, last_batch_norm=True))
    predictor: HeadConfig = field(default_factory=lambda: HeadConfig(hidden_dim=512, output_dim=2048))
    fixed_predictor_lr: bool = MISSING      # the predictor keeps the base LR, unscheduled (the paper's 68.1%)


@dataclass
class VICRegConfig(MethodConfig):
    expander: HeadConfig = field(
        default_factory=lambda: HeadConfig(hidden_dim=8192, output_dim=8192, num_layers=3)
    )


@dataclass
class DINOHeadConfig:
    hidden_dim: int = MISSING
    bottleneck_dim: int = MISSING
    output_dim: int = MISSING               # K, the prototypes the teacher's softmax is over
    num_layers: int = MISSING
    batch_norm: bool = MISSING
    norm_last_layer: bool = MISSING         # freeze the weight-normalised last layer's norm at 1 (stabler)


@dataclass
class DINOConfig(MethodConfig):
    head: DINOHeadConfig = field(default_factory=DINOHeadConfig)
    momentum: float = MISSING               # teacher EMA, base of the schedule
    momentum_cosine: bool = MISSING         # cosine from `momentum` to 1 over training
    freeze_last_layer_epochs: int = MISSING  # the head's last layer gets no update for this many epochs


@dataclass
class InfoNCEConfig:
    _target_: str = MISSING
    temperature: float = MISSING


@dataclass
class BYOLLossConfig:
    _target_: str = MISSING


@dataclass
class BarlowTwinsLossConfig:
    _target_: str = MISSING
    lambda_offdiag: float = MISSING
    eps: float = 1.0e-5


@dataclass
class NegativeCosineConfig:
    _target_: str = MISSING


@dataclass
class VICRegLossConfig:
    _target_: str = MISSING
    invariance_weight: float = MISSING      # lambda
    variance_weight: float = MISSING        # mu
    covariance_weight: float = MISSING      # nu
    gamma: float = MISSING                  # target std of every dimension
    eps: float = MISSING


@dataclass
class DINOLossConfig:
    _target_: str = MISSING
    output_dim: int = MISSING                                      # K of DINO's head
    student_temperature: float = MISSING
    teacher_temperature: float = MISSING
    warmup_teacher_temperature: float = MISSING
    warmup_teacher_temperature_epochs: float = MISSING
    center_momentum: float = MISSING


# --- optimisation ---------------------------------------------------------------------------
@dataclass
class OptimizerConfig:
    name: str = MISSING                     # sgd | lars | adamw
    lr: float = MISSING                     # base LR for a global batch of 256
    scale_lr: bool = True                   # lr = base_lr * global_batch / 256
    weight_decay: float = MISSING
    momentum: float = 0.9
    nesterov: bool = False
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    trust_coefficient: float = 0.001        # LARS
    exclude_bias_and_norm: bool = True
    probe_lr: float = 0.1                   # online linear probe, its own group, no weight decay


@dataclass
class SchedulerConfig:
    name: str = MISSING                     # warmup_cosine | constant
    warmup_epochs: float = 0.0
    warmup_start_factor: float = 0.0
    min_lr_factor: float = 0.0


# --- pretext-task methods (RotNet, Jigsaw, context encoder, colorization) and their losses -----
@dataclass
class ClassifierHeadConfig:
    hidden_dim: int = MISSING
    num_layers: int = MISSING               # 1: a linear classifier
    batch_norm: bool = MISSING


@dataclass
class RotNetConfig(MethodConfig):
    all_rotations: bool = MISSING           # every image in all 4 rotations (4x batch); false: one random k
    head: ClassifierHeadConfig = field(default_factory=ClassifierHeadConfig)


@dataclass
class JigsawConfig(MethodConfig):
    num_permutations: int = MISSING         # a stored set: 100, 1000 or 2000
    tile_size: Optional[int] = MISSING      # px; null: 3/4 of the grid cell, the rest is jitter
    jitter: bool = MISSING
    color_drop: bool = MISSING              # one random channel per tile (blocks chromatic aberration)
    tile_dim: int = MISSING                 # per-tile projection, concatenated over the 9 tiles
    head: ClassifierHeadConfig = field(default_factory=lambda: ClassifierHeadConfig(hidden_dim=4096, num_layers=2))


@dataclass
class MaskConfig:
    kind: str = MISSING                     # central | random_block | random_region
    area: float = MISSING                   # fraction of the image hidden
    block_size: Optional[int] = MISSING     # random_region block side in px; null: 1/16 of the short side


@dataclass
class DecoderConfig:
    start_size: int = MISSING
    width: int = MISSING
    min_width: int = MISSING


@dataclass
class DiscriminatorConfig:
    width: int = MISSING
    max_width: int = MISSING
    optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(
        name="adamw", lr=2.0e-4, scale_lr=False, betas=[0.5, 0.999]))  # DCGAN's Adam


@dataclass
class ContextEncoderConfig(MethodConfig):
    mask: MaskConfig = field(default_factory=MaskConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)  # when loss.adversarial
    image_every_n_epochs: int = MISSING     # <run dir>/images/epoch_XXX.png (and the last epoch)
    image_grid_size: int = MISSING          # images per row of the grid


@dataclass
class ColorizationConfig(MethodConfig):
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    output_stride: int = MISSING            # predict colour at resolution / output_stride (the paper: 4)
    image_every_n_epochs: int = MISSING
    image_grid_size: int = MISSING


@dataclass
class MAEDecoderConfig:
    width: int = MISSING
    depth: int = MISSING
    heads: int = MISSING


@dataclass
class MAEConfig(MethodConfig):
    primary_eval: str = MISSING
    mask_ratio: float = MISSING             # fraction of each image's patches hidden from the encoder
    decoder: MAEDecoderConfig = field(default_factory=MAEDecoderConfig)
    image_every_n_epochs: int = MISSING     # <run dir>/images/epoch_XXX.png: input / masked / reconstruction
    image_grid_size: int = MISSING


@dataclass
class MAELossConfig:
    _target_: str = MISSING
    norm_pix_loss: bool = MISSING           # targets: each patch normalised by its own mean and variance


@dataclass
class MoCoV3Config(MethodConfig):
    projector: HeadConfig = field(default_factory=lambda: HeadConfig(
        hidden_dim=4096, output_dim=256, num_layers=3, last_batch_norm=True))
    predictor: HeadConfig = field(default_factory=lambda: HeadConfig(hidden_dim=4096, output_dim=256))
    momentum: float = MISSING               # momentum encoder EMA, base of the schedule
    momentum_cosine: bool = MISSING         # cosine from `momentum` to 1 over training
    freeze_patch_embed: bool = MISSING      # ViTs: a fixed random patch projection (stabilises training)


@dataclass
class MoCoV3LossConfig:
    _target_: str = MISSING
    temperature: float = MISSING


@dataclass
class CrossEntropyConfig:
    _target_: str = MISSING
    label_smoothing: float = MISSING


@dataclass
class InpaintingConfig:
    _target_: str = MISSING
    overlap: int = MISSING                  # px band inside the mask edge (the paper: 4 at 128 px)
    overlap_weight: float = MISSING
    adversarial: bool = MISSING
    reconstruction_weight: float = MISSING
    adversarial_weight: float = MISSING


@dataclass
class ColorizationLossConfig:
    _target_: str = MISSING
    kind: str = MISSING                     # regression | classification (over quantised ab bins)
    regression: str = MISSING               # smooth_l1 | l2, on ab / 110
    bin_size: float = MISSING               # classification: ab grid step
    sigma: float = MISSING                  # soft-encoding Gaussian over neighbouring bins
    rebalance: float = MISSING              # lambda: prior mixed with uniform, weights ~ 1 / mixture
    temperature: float = MISSING            # annealed mean when decoding a prediction


@dataclass
class PairwiseMarginConfig:
    _target_: str = MISSING
    margin: float = MISSING


# --- evaluation -----------------------------------------------------------------------------
@dataclass
class KNNConfig:
    k: int = 200
    temperature: float = 0.1


@dataclass
class LinearConfig:
    weight_decays: List[float] = field(default_factory=lambda: [0.0, 1e-5, 1e-4, 1e-3])
    max_iter: int = 200                     # L-BFGS iterations on cached features
    holdout_fraction: float = 0.1           # of train, used to pick the weight decay
    solver: str = "lbfgs"                   # lbfgs (full batch) | sgd (mini-batch, for large feature sets)
    sgd_epochs: int = 100
    sgd_lr: float = 0.1
    sgd_batch_size: int = 1024


@dataclass
class FinetuneConfig:
    epochs: int = 5
    lr: float = 0.1                         # head LR per 256 images (scaled by batch / 256)
    backbone_lr_factor: float = 0.1         # backbone LR = factor x head LR
    layer_decay: float = 1.0                # ViTs: block i of L at factor x decay ** (L + 1 - i) (MAE: 0.65-0.75)
    weight_decay: float = 5.0e-4
    momentum: float = 0.9
    batch_size: Optional[int] = None        # null: data.batch_size
    crop_scale: List[float] = field(default_factory=lambda: [0.08, 1.0])
    flip_p: float = 0.5
    label_smoothing: float = 0.0


@dataclass
class EvalConfig:
    name: str = MISSING
    knn: Optional[KNNConfig] = field(default_factory=KNNConfig)
    linear: Optional[LinearConfig] = None
    finetune: Optional[FinetuneConfig] = None
    knn_at_init: bool = True


# --- run ------------------------------------------------------------------------------------
@dataclass
class TrainerConfig:
    accelerator: str = MISSING
    devices: Any = MISSING
    num_nodes: int = 1
    precision: Any = MISSING
    max_epochs: int = MISSING
    max_steps: int = -1
    limit_train_batches: Optional[Any] = None
    limit_val_batches: Optional[Any] = None
    check_val_every_n_epoch: int = MISSING
    log_every_n_steps: int = MISSING
    accumulate_grad_batches: int = 1
    gradient_clip_val: Optional[float] = None
    deterministic: Any = False
    benchmark: Optional[bool] = None
    num_sanity_val_steps: int = MISSING
    fast_dev_run: Any = False
    overfit_batches: Any = 0.0
    profiler: Optional[str] = None
    enable_progress_bar: bool = True


@dataclass
class StrategyConfig:
    name: str = MISSING
    strategy: Any = MISSING                 # Lightning strategy name: auto | ddp | ddp_spawn
    sync_batchnorm: bool = False            # convert BatchNorm to SyncBatchNorm (GPUs only)
    shuffle_bn: bool = False                # MoCo: shuffle the key batch across ranks around the key encoder
    split_bn_groups: int = 1                # > 1: BatchNorm statistics per group of the per-device batch,
                                            # emulating that many devices without SyncBN (one-device ShuffleBN)


@dataclass
class PathsConfig:
    root_dir: str = MISSING
    data_dir: str = MISSING
    log_dir: str = MISSING
    output_dir: str = MISSING


@dataclass
class TrainConfig:
    data: Any = MISSING
    backbone: Any = MISSING
    method: Any = MISSING
    loss: Any = MISSING
    augmentation: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    eval: Any = MISSING
    strategy: Any = MISSING
    trainer: Any = MISSING
    logger: Any = MISSING
    callbacks: Any = MISSING
    paths: Any = MISSING
    experiment: Any = None
    debug: Any = None
    task_name: str = "train"
    run_name: str = MISSING
    tags: List[str] = field(default_factory=list)
    seed: Optional[int] = 42
    ckpt_path: Optional[str] = None
    hparams_search: Any = None              # conf/hparams_search/<name>.yaml (Optuna), a multirun
    optimized_metric: Optional[str] = None  # what train.py returns to a sweeper, e.g. val/knn_top1
    compile: bool = False                   # torch.compile the backbone (first steps slower, later ones faster)
    images: bool = True                     # <run dir>/images/: views, neighbours, embedding, curves (selfsup/pictures.py)
    resume: str = "auto"                    # auto: continue this command's unfinished run | never
    on_nonfinite: str = "stop"              # a NaN/inf loss: stop (keep the last good checkpoint) | skip the batch
    inject_nan_at_step: Optional[int] = None  # TEST HOOK (debug=inject_nan): the loss of this global step becomes NaN


def _register_resolvers() -> None:
    resolvers = {
        "ge": lambda a, b: a is not None and a >= b,
        "le": lambda a, b: a is not None and a <= b,
        "cpu_count": lambda: len(os.sched_getaffinity(0)),
        # The launch directory (hydra.job.chdir is false). Unlike ${hydra:runtime.cwd} it resolves
        # before the first job too, where a multirun's sweeper resolves hydra.sweep.dir.
        "cwd": lambda: os.getcwd(),
        "auto_precision": _auto_precision,
        "local_crop": _local_crop_resolution,
    }
    for name, fn in resolvers.items():
        OmegaConf.register_new_resolver(name, fn, replace=True)


def _local_crop_resolution(resolution: int) -> int:
    """Multi-crop's local view side: 3/7 of the global one (96 px at 224, DINO and SwAV), to a multiple
    of 8 and at least 8 (16 px at 32)."""
    if resolution is None:
        raise ValueError("the local crop size needs data.resolution, which is not known yet")
    return max(8, round(resolution * 3 / 7 / 8) * 8)


def _auto_precision() -> str:
    """bf16 autocast where the hardware does it natively (Ampere+ GPUs, AVX-512-BF16/AMX CPUs),
    since it is ~3x faster than fp32 on such CPUs; fp32 elsewhere."""
    import torch

    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return "32-true"
    return "bf16-mixed" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "32-true"


SCHEMAS = {
    "data": DataConfig,
    "augmentation": AugmentationConfig,
    "backbone": BackboneConfig,
    "backbone/vit": ViTBackboneConfig,
    "method/simclr": SimCLRConfig,
    "loss/nt_xent": NTXentConfig,
    "method/rotnet": RotNetConfig,
    "method/jigsaw": JigsawConfig,
    "method/context_encoder": ContextEncoderConfig,
    "method/colorization": ColorizationConfig,
    "loss/cross_entropy": CrossEntropyConfig,
    "loss/inpainting": InpaintingConfig,
    "loss/colorization": ColorizationLossConfig,
    "loss/pairwise_margin": PairwiseMarginConfig,
    "method/mae": MAEConfig,
    "loss/mae": MAELossConfig,
    "method/mocov3": MoCoV3Config,
    "loss/mocov3": MoCoV3LossConfig,
    "method/mocov2": MoCoV2Config,
    "method/byol": BYOLConfig,
    "method/barlow_twins": BarlowTwinsConfig,
    "loss/info_nce": InfoNCEConfig,
    "loss/byol_cosine": BYOLLossConfig,
    "loss/barlow_twins": BarlowTwinsLossConfig,
    "augmentation/multicrop": MultiCropConfig,
    "method/simsiam": SimSiamConfig,
    "method/vicreg": VICRegConfig,
    "method/dino": DINOConfig,
    "loss/negative_cosine": NegativeCosineConfig,
    "loss/vicreg": VICRegLossConfig,
    "loss/dino": DINOLossConfig,
    "optimizer": OptimizerConfig,
    "scheduler": SchedulerConfig,
    "eval": EvalConfig,
    "trainer": TrainerConfig,
    "strategy": StrategyConfig,
    "paths": PathsConfig,
}


def register_configs() -> None:
    """Make the schemas visible to Hydra as `schema/<group>` (call before `hydra.main` runs)."""
    _register_resolvers()
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    for path, node in SCHEMAS.items():
        group, _, name = path.rpartition("/")
        if not group:
            group, name = path, "base"
        store.store(group=f"schema/{group}", name=name, node=node)
