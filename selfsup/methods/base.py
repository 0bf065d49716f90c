"""The one LightningModule every method extends.

It owns what all methods share: the backbone built from config, optimizer and LR schedule, the
online linear probe on detached features, the per-epoch kNN monitor and the logging. A method
subclass adds its heads and implements `training_loss(views) -> StepOutput`, nothing else."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_info
from torch import nn

from selfsup import distributed
from selfsup.eval.knn import knn_top1
from selfsup.models.backbones import build_backbone
from selfsup.optim import build_optimizer, build_scheduler, parameter_groups, scaled_lr


@dataclass
class StepOutput:
    loss: torch.Tensor
    features: torch.Tensor  # backbone features of the first view, fed (detached) to the online probe
    logs: dict[str, torch.Tensor] = field(default_factory=dict)  # extra scalars, logged as train/<name>


class SSLMethod(pl.LightningModule):
    def __init__(self, cfg: DictConfig):
        super().__init__()
        self.save_hyperparameters({"cfg": OmegaConf.to_container(cfg, resolve=True)})
        self.cfg = cfg
        self.backbone = build_backbone(**cfg.backbone)
        self.feature_dim = self.backbone.output_dim
        self.loss_fn = instantiate(cfg.loss) if cfg.get("loss") is not None else None
        self.online_probe = nn.Linear(self.feature_dim, cfg.data.num_classes)
        self.channels_last = cfg.backbone.channels_last
        self._val_features: dict[int, list[torch.Tensor]] = {}
        self._val_labels: dict[int, list[torch.Tensor]] = {}

    # --- what a method implements -----------------------------------------------------------
    def training_loss(self, views: list[torch.Tensor]) -> StepOutput:
        raise NotImplementedError

    # --- shared machinery -------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(self._memory_format(images))

    def _memory_format(self, images: torch.Tensor) -> torch.Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def training_step(self, batch, batch_idx):
        views, labels = batch
        out = self.training_loss([self._memory_format(v) for v in views])
        probe_loss = F.cross_entropy(self.online_probe(out.features.detach()), labels, ignore_index=-1)
        self.log("train/loss", out.loss, prog_bar=True)
        self.log("train/online_linear_loss", probe_loss)
        self.log("train/lr", self.lr_schedulers().get_last_lr()[0])
        for name, value in out.logs.items():
            self.log(f"train/{name}", value)
        return out.loss + probe_loss

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        images, labels = batch
        features = self(images)
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
        knn = self.cfg.eval.knn
        acc = knn_top1(bank[0], bank[1], val[0], val[1], self.cfg.data.num_classes, knn.k, knn.temperature)
        probe_acc = (self.online_probe(val[0]).argmax(1) == val[1]).float().mean().item()
        self.log("val/knn_top1", acc, rank_zero_only=True)
        self.log("val/online_linear_top1", probe_acc, rank_zero_only=True)

    def configure_optimizers(self):
        cfg, trainer = self.cfg.optimizer, self.trainer
        global_batch = self.cfg.data.batch_size * trainer.world_size * trainer.accumulate_grad_batches
        lr = scaled_lr(cfg, global_batch)
        rank_zero_info(
            f"batch: {self.cfg.data.batch_size} per device x {trainer.world_size} devices x "
            f"{trainer.accumulate_grad_batches} accumulation = {global_batch} global; "
            f"lr = {cfg.lr} x {global_batch}/256 = {lr:.4g}" if cfg.scale_lr else f"lr = {lr:.4g}"
        )
        ssl_modules = nn.ModuleList(m for name, m in self.named_children() if name != "online_probe")
        groups = parameter_groups(ssl_modules, cfg.weight_decay, cfg.exclude_bias_and_norm)
        groups.append({"params": list(self.online_probe.parameters()), "weight_decay": 0.0,
                       "lr": cfg.probe_lr, "lars_exclude": True})
        optimizer = build_optimizer(cfg, groups, lr)
        total_steps = trainer.estimated_stepping_batches
        steps_per_epoch = max(1, total_steps // max(1, trainer.max_epochs))
        scheduler = build_scheduler(self.cfg.scheduler, optimizer, total_steps, steps_per_epoch)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
