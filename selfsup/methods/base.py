"""The one LightningModule every method extends.

It owns what all methods share: the backbone built from config, optimizer and LR schedule, the
online linear probe on detached features, the per-epoch kNN monitor and the logging. A method
subclass adds its heads and implements `training_loss(views) -> StepOutput`, nothing else."""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import nn

from selfsup import distributed
from selfsup.data.gpu_augment import DeviceAugment
from selfsup.data.layout import trains_online_probe
from selfsup.errors import UserError
from selfsup.eval.features import EvaluationInput
from selfsup.eval.knn import knn_top1
from selfsup.methods.nonfinite import guard_loss
from selfsup.models.backbones import build_backbone
from selfsup.models.weights import load_weights
from selfsup.optim import build_optimizer, build_scheduler, parameter_groups, scaled_lr

# The batch-transfer hooks below are the module's on purpose (the device augmentation is part of the
# step); Lightning would otherwise warn on every run that a datamodule was passed as well.
warnings.filterwarnings("ignore", message=r".*overridden `on_(before|after)_batch_transfer` in `LightningModule` but")
# Lightning internals warning on every run about things the user cannot act on: its pytree helper using an
# API this torch deprecates, and the parameter-size estimate in the model summary under bf16.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
warnings.filterwarnings("ignore", message=r"Precision .* is not supported by the model summary")

COLLAPSE_Z_STD_FRACTION = 0.1  # warn when train/z_std falls below this fraction of 1/sqrt(d)


@dataclass
class StepOutput:
    loss: torch.Tensor
    features: torch.Tensor  # backbone features of the first view, fed (detached) to the online probe
    logs: dict[str, torch.Tensor] = field(default_factory=dict)  # extra scalars, logged as train/<name>
    embeddings: torch.Tensor | None = None  # projector output of the first view: collapse monitor (train/z_std)


def forward_by_resolution(module: nn.Module, views: list[torch.Tensor]) -> list[torch.Tensor]:
    """`module` on every view, one call per run of consecutive same-size views (multi-crop: one forward
    for the global views, one for the local ones, as DINO's MultiCropWrapper); one output per view."""
    outputs: list[torch.Tensor] = []
    for _, same_size in itertools.groupby(views, key=lambda view: view.shape[-2:]):
        batch = list(same_size)
        outputs += module(torch.cat(batch)).chunk(len(batch))
    return outputs


class SSLMethod(pl.LightningModule):
    num_views: int | None = None  # augmented views per image that `training_loss` takes (None: any number)
    losses: tuple[type, ...] = ()  # the loss classes `training_loss` is written for (checked against loss=)
    separately_optimized: tuple[str, ...] = ()  # children with an optimizer of their own (a GAN critic)
    constant_lr_modules: tuple[str, ...] = ()  # children whose LR the schedule leaves at the base LR (SimSiam)

    def __init__(self, cfg: DictConfig):
        super().__init__()
        # enum_to_str: the schema's choice fields (optimizer.name, ...) as plain strings, which a
        # weights_only checkpoint load (Lightning's resume) accepts
        self.save_hyperparameters({"cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)})
        self.cfg = cfg
        self.backbone = build_backbone(**cfg.backbone)
        self.feature_dim = self.backbone.output_dim
        self.evaluation_input = EvaluationInput.from_config(cfg.method, cfg.data)  # what evaluations feed the backbone
        self.loss_fn = instantiate(cfg.loss) if cfg.get("loss") is not None else None
        # Parameter-free BatchNorm first (as in MAE's linear probing): the probe then sees features of
        # a stable scale however the backbone's drift during SSL training, so one LR fits all methods.
        # None without labels to learn from (data=images, eval.data: trains_online_probe).
        self.online_probe = (
            nn.Sequential(
                nn.BatchNorm1d(self.feature_dim, affine=False), nn.Linear(self.feature_dim, cfg.data.num_classes)
            )
            if trains_online_probe(cfg)
            else None
        )
        self.channels_last = cfg.backbone.channels_last
        # augmentation.on_device / data.decode_on_gpu: colour ops (and decode + crop) as batched tensor ops
        self.device_augment = DeviceAugment.from_config(cfg)
        self._val_features: dict[int, list[torch.Tensor]] = {}
        self._val_labels: dict[int, list[torch.Tensor]] = {}
        self._collapse_warned = False
        self.final_eval_features: tuple[torch.Tensor, ...] | None = None  # (bank_x, bank_y, val_x, val_y)

    # --- what a method implements -----------------------------------------------------------
    @classmethod
    def check_config(cls, cfg: DictConfig, world_size: int) -> None:
        """The method's own rules, raising UserError with a one-line fix. The pipeline calls this
        once, with the data known (data.resolution) and the world size the Trainer will have, before
        the model is built; `on_fit_start` calls it again for a module fitted by a Trainer of its own.
        A subclass adds its rules and calls super()."""
        views = len(cfg.augmentation.views)
        if cls.num_views is not None and views != cls.num_views:
            wanted = {1: "one view", 2: "two views"}.get(cls.num_views, f"{cls.num_views} views")
            raise UserError(
                f"method={cfg.method.name} takes {wanted} per image, but augmentation="
                f"{cfg.augmentation.name} makes {views}: drop the augmentation override (each "
                "method picks its own) or use one that makes " + wanted
            )
        target = (cfg.get("loss") or {}).get("_target_")
        if target is not None and cls.losses and not issubclass(get_class(target), cls.losses):
            raise UserError(
                f"method={cfg.method.name} trains with {' or '.join(c.__name__ for c in cls.losses)}, "
                f"not the {target.rpartition('.')[2]} of this loss= override: drop the loss override "
                "(each method picks its own loss)"
            )

    def training_loss(self, views: list[torch.Tensor]) -> StepOutput:
        raise NotImplementedError

    # --- which encoder is scored (momentum methods: method.eval_encoder) -----------------------
    encoders: tuple[str, ...] = ("online",)

    @classmethod
    def check_encoder(cls, encoder: str) -> None:
        """eval.py / export.py encoder=: one this method has."""
        if encoder not in cls.encoders:
            raise UserError(
                f"encoder={encoder}: {cls.__name__} has only {' and '.join(cls.encoders)} encoder(s) "
                "(BYOL, MoCo v2/v3 and DINO have a momentum one): use encoder=online or leave it out"
            )

    @classmethod
    def encoder_prefix(cls, encoder: str) -> str:
        """The state_dict prefix, in a checkpoint of this method, of the backbone of `encoder`."""
        return "backbone."

    def start_from(self, weights) -> None:
        """Warm start (weights=): `weights` (selfsup.models.weights.Weights) into the backbone."""
        load_weights(self.backbone, weights)

    def evaluated_backbone(self) -> nn.Module:
        """The backbone the kNN monitor and the final evaluation score (eval.py and export.py read it
        from the checkpoint through `encoder_prefix`)."""
        return self.backbone

    # --- shared machinery -------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(self._memory_format(images))

    def _memory_format(self, images: torch.Tensor) -> torch.Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def step_losses(self, views: list[torch.Tensor], labels: torch.Tensor) -> tuple[StepOutput, torch.Tensor]:
        """The step's computation without the framework: the method's `training_loss` on the views (in
        the configured memory format) and the online probe's loss on its detached features. The
        bench's bare loop calls this too, so it times exactly what is trained."""
        out = self.training_loss([self._memory_format(v) for v in views])
        if self.online_probe is None:
            return out, out.loss.new_zeros(())
        return out, F.cross_entropy(self.online_probe(out.features.detach()), labels, ignore_index=-1)

    def training_step(self, batch, batch_idx):
        out, probe_loss = self.step_losses(*batch)
        loss = guard_loss(self, out.loss + probe_loss, {"loss": out.loss, "online_linear_loss": probe_loss, **out.logs})
        if loss is None:  # non-finite, on_nonfinite=skip: no backward and no update for this batch
            return None
        self.log("train/loss", out.loss, prog_bar=True)
        if self.online_probe is not None:
            self.log("train/online_linear_loss", probe_loss)
        schedulers = self.lr_schedulers()  # a list when a method has several optimizers (a GAN critic)
        lr = (schedulers[0] if isinstance(schedulers, list) else schedulers).get_last_lr()[0]
        self.log("train/lr", torch.tensor(lr))  # a CPU tensor: a float would be copied to the GPU, a sync per step
        for name, value in out.logs.items():
            self.log(f"train/{name}", value)
        if out.embeddings is not None:
            self._monitor_collapse(out.embeddings.detach())
        return loss

    def on_fit_start(self) -> None:
        self.check_config(self.cfg, self.trainer.world_size)

    def configure_model(self) -> None:
        if self.cfg.get("compile") and getattr(self.backbone, "_compiled_call_impl", None) is None:
            self.backbone.compile()  # in place: state_dict keys unchanged; copies of it are eager

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """data.decode_on_gpu: the batch is encoded JPEGs (CPU); decode (nvJPEG) and crop on the device."""
        if self.device_augment is not None and self.device_augment.decode and self.trainer.training:
            encoded, labels = batch
            return self.device_augment.decode_and_crop(encoded, self.device), labels
        return batch

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """augmentation.on_device: the views arrive cropped and flipped (uint8); colour jitter,
        grayscale, blur, solarize and normalisation run here, batched, per-sample random."""
        if self.device_augment is not None and self.trainer.training:
            views, labels = batch
            return self.device_augment(views), labels
        return batch

    def _monitor_collapse(self, z: torch.Tensor) -> None:
        """train/z_std: per-dimension std of the L2-normalised embeddings, averaged over dimensions
        (SimSiam, Chen & He 2021): ~1/sqrt(d) when healthy, ~0 when collapsed; warns once."""
        z_std = F.normalize(z.float(), dim=1).std(dim=0).mean()
        self.log("train/z_std", z_std)
        if self._collapse_warned or self.global_step % self.trainer.log_every_n_steps:
            return  # .item() syncs with the device: only check on logging steps
        threshold = COLLAPSE_Z_STD_FRACTION / z.shape[1] ** 0.5
        if z_std.item() < threshold:
            self._collapse_warned = True
            rank_zero_warn(
                f"representation collapse: train/z_std={z_std.item():.2e} < {threshold:.2e} "
                f"({COLLAPSE_Z_STD_FRACTION} x 1/sqrt({z.shape[1]})) at step {self.global_step}; "
                "check the learning rate, momentum and augmentations"
            )

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        images, labels = batch
        features = self.evaluated_backbone()(self._memory_format(self.evaluation_input(images)))
        self._val_features.setdefault(dataloader_idx, []).append(features.float())
        self._val_labels.setdefault(dataloader_idx, []).append(labels)

    def on_validation_epoch_end(self):
        if len(self._val_features) < 2:  # e.g. limit_val_batches=0
            return
        bank, val = (
            (distributed.gather(torch.cat(self._val_features[i])), distributed.gather(torch.cat(self._val_labels[i])))
            for i in (0, 1)
        )
        self._val_features.clear()
        self._val_labels.clear()
        if self._is_final_full_validation(len(bank[0]), len(val[0])):
            self.final_eval_features = (*bank, *val)
        knn = self.cfg.eval.knn
        if knn is not None:
            acc = knn_top1(bank[0], bank[1], val[0], val[1], self.cfg.data.num_classes, knn.k, knn.temperature)
            self.log("val/knn_top1", acc, rank_zero_only=True)
        if self.online_probe is not None:
            probe_acc = (self.online_probe(val[0]).argmax(1) == val[1]).float().mean().item()
            self.log("val/online_linear_top1", probe_acc, rank_zero_only=True)

    def _is_final_full_validation(self, bank_size: int, val_size: int) -> bool:
        """The last epoch's monitor embedded exactly what the final evaluation would (every image, one
        process, final weights): the pipeline reuses those features instead of embedding them again."""
        trainer = self.trainer
        if trainer.datamodule is None:
            return False
        everything = bank_size == len(trainer.datamodule.labelled) and val_size == len(trainer.datamodule.val)
        return (
            everything
            and trainer.world_size == 1
            and not trainer.sanity_checking
            and self.current_epoch == trainer.max_epochs - 1
        )

    def configure_optimizers(self):
        cfg, trainer = self.cfg.optimizer, self.trainer
        global_batch = self.cfg.data.batch_size * trainer.world_size * trainer.accumulate_grad_batches
        lr = scaled_lr(cfg, global_batch)
        rank_zero_info(
            f"batch: {self.cfg.data.batch_size} per device x {trainer.num_devices} devices x {trainer.num_nodes} "
            f"nodes x {trainer.accumulate_grad_batches} accumulation = {global_batch} global; "
            + (f"lr = {cfg.lr} x {global_batch}/256 = {lr:.4g}" if cfg.scale_lr else f"lr = {lr:.4g} (not scaled)")
        )
        total_steps = trainer.estimated_stepping_batches
        optimizer, scheduler = self.optimizer_and_schedule(
            lr, total_steps, max(1, total_steps // max(1, trainer.max_epochs))
        )
        self._check_lr_on_ranks(cfg.lr, optimizer.param_groups[0]["initial_lr"])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def optimizer_and_schedule(self, lr: float, total_steps: int, steps_per_epoch: int):
        """The optimizer at `lr` over the SSL modules (weight decay as `optimizer.*` says) and the online
        probe (its own LR, no decay), and its per-step LR schedule. The bench's bare loop uses it too."""
        cfg = self.cfg.optimizer
        ssl_modules = nn.ModuleList(
            m
            for name, m in self.named_children()
            if name != "online_probe" and name not in (*self.separately_optimized, *self.constant_lr_modules)
        )
        rules = (cfg.weight_decay, cfg.exclude_bias_and_norm, cfg.bias_and_norm_lr_factor)
        groups = parameter_groups(ssl_modules, *rules)
        for name in self.constant_lr_modules:
            groups += [{**group, "constant_lr": True} for group in parameter_groups(getattr(self, name), *rules)]
        if self.online_probe is not None:
            groups.append(
                {
                    "params": list(self.online_probe.parameters()),
                    "weight_decay": 0.0,
                    "lr": cfg.probe_lr,
                    "lars_exclude": True,
                }
            )
        optimizer = build_optimizer(cfg, groups, lr)
        return optimizer, build_scheduler(self.cfg.scheduler, optimizer, total_steps, steps_per_epoch)

    def _check_lr_on_ranks(self, base_lr: float, lr: float) -> None:
        """Under DDP, print every rank's optimizer LR and fail if they differ: ranks that composed
        different configs (a sweep re-launched per rank) would otherwise train silently apart."""
        per_rank = distributed.gather_object((base_lr, lr))
        if len(per_rank) == 1:
            return
        rank_zero_info(
            "lr per rank (base -> optimizer): "
            + ", ".join(f"rank {r}: {b:.6g} -> {o:.6g}" for r, (b, o) in enumerate(per_rank))
        )
        if len(set(per_rank)) > 1:
            raise UserError(
                f"the ranks were given different learning rates {per_rank}: in sweeps use strategy=ddp_spawn"
            )
