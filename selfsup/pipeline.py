"""What train.py and eval.py run: pretraining, then the downstream evaluation, then results.json."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.utilities import rank_zero_only

from selfsup.callbacks import ThroughputMonitor
from selfsup.checks import check_train_config
from selfsup.data.datamodule import SSLDataModule
from selfsup.errors import UserError
from selfsup.eval.features import extract_features
from selfsup.eval.knn import knn_top1
from selfsup.eval.linear import linear_probe
from selfsup.models.backbones import build_backbone


def _device(trainer_cfg) -> torch.device:
    wants_gpu = trainer_cfg.accelerator in ("auto", "gpu", "cuda")
    return torch.device("cuda", 0) if wants_gpu and torch.cuda.is_available() else torch.device("cpu")


def evaluate_backbone(backbone, datamodule: SSLDataModule, eval_cfg, device, bf16: bool, linear: bool = True) -> dict:
    """kNN (and the offline linear probe) on frozen, augmentation-free features."""
    backbone.to(device)
    train_loader, val_loader = datamodule.evaluation_loaders()
    train_x, train_y = extract_features(backbone, train_loader, device, bf16, "embedding train split")
    val_x, val_y = extract_features(backbone, val_loader, device, bf16, "embedding val split")
    num_classes = datamodule.cfg.num_classes
    scores = {}
    if eval_cfg.knn is not None:
        scores["knn_top1"] = knn_top1(train_x, train_y, val_x, val_y, num_classes, eval_cfg.knn.k, eval_cfg.knn.temperature)
    if linear and eval_cfg.linear is not None:
        scores.update(linear_probe(train_x, train_y, val_x, val_y, num_classes, **eval_cfg.linear))
    return scores


def write_results(results: dict, output_dir: str) -> Path:
    path = Path(output_dir) / "results.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"results: {path}", flush=True)
    return path


def _trainer(cfg: DictConfig) -> pl.Trainer:
    loggers = [instantiate(c) for c in cfg.logger.values()] if cfg.logger else []
    callbacks = [instantiate(c) for c in cfg.callbacks.values()] if cfg.callbacks else []
    callbacks.append(ThroughputMonitor())
    return pl.Trainer(
        **OmegaConf.to_container(cfg.trainer, resolve=True),
        strategy=cfg.strategy.strategy,
        sync_batchnorm=cfg.strategy.sync_batchnorm,
        logger=loggers,
        callbacks=callbacks,
        default_root_dir=cfg.paths.output_dir,
    )


def pretrain(cfg: DictConfig) -> dict:
    check_train_config(cfg)
    if cfg.seed is not None:
        pl.seed_everything(cfg.seed, workers=True)
    datamodule = SSLDataModule(cfg.data, cfg.augmentation)
    datamodule.complete_config()
    model = get_class(cfg.method._target_)(cfg)
    trainer = _trainer(cfg)

    device, bf16 = _device(cfg.trainer), "bf16" in str(cfg.trainer.precision)
    at_init = {}
    if cfg.eval.knn_at_init and cfg.eval.knn is not None and rank_zero_only.rank == 0:
        at_init = evaluate_backbone(model.backbone, datamodule, cfg.eval, device, bf16, linear=False)
        print(f"kNN top-1 at init: {at_init['knn_top1']:.4f}", flush=True)

    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    train_seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return {}

    scores = evaluate_backbone(model.backbone, datamodule, cfg.eval, device, bf16)
    throughput = next(c for c in trainer.callbacks if isinstance(c, ThroughputMonitor))
    checkpoint = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else None
    results = {
        "method": cfg.method.name,
        "data": cfg.data.name,
        "backbone": cfg.backbone.name,
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "seed": cfg.seed,
        "batch_size": cfg.data.batch_size,
        "global_batch_size": cfg.data.batch_size * trainer.world_size * trainer.accumulate_grad_batches,
        "precision": str(cfg.trainer.precision),
        "knn_top1_at_init": at_init.get("knn_top1"),
        **scores,
        "train_seconds": round(train_seconds, 2),
        "train_images_per_sec": round(throughput.images_per_sec, 2),
        "checkpoint": checkpoint or None,
        "run_dir": cfg.paths.output_dir,
    }
    write_results(results, cfg.paths.output_dir)
    return results


def load_pretrain_config(ckpt_path: str) -> tuple[DictConfig, dict]:
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist: pass ckpt_path=<run dir>/checkpoints/last.ckpt")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    try:
        train_cfg = OmegaConf.create(checkpoint["hyper_parameters"]["cfg"])
    except KeyError:
        raise UserError(f"{path} is not a selfsup checkpoint (no training config inside)") from None
    return train_cfg, checkpoint["state_dict"]


def evaluate_checkpoint(cfg: DictConfig) -> dict:
    """Frozen-feature evaluation of a checkpoint's backbone, on its own data or another (transfer)."""
    if not cfg.ckpt_path:
        raise UserError("eval.py needs a checkpoint: ckpt_path=<run dir>/checkpoints/last.ckpt")
    train_cfg, state_dict = load_pretrain_config(cfg.ckpt_path)
    data_cfg = cfg.data if cfg.data is not None else train_cfg.data
    with open_dict(data_cfg):
        if cfg.data is not None and cfg.data.resolution is None:
            data_cfg.resolution = train_cfg.data.resolution
    datamodule = SSLDataModule(data_cfg, None)
    datamodule.complete_config()

    backbone = build_backbone(**train_cfg.backbone)
    prefix = "backbone."
    backbone.load_state_dict({k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)})
    device = _device(cfg.trainer)
    bf16 = "bf16" in str(cfg.trainer.precision)
    scores = evaluate_backbone(backbone, datamodule, cfg.eval, device, bf16)
    results = {
        "checkpoint": str(cfg.ckpt_path),
        "method": train_cfg.method.name,
        "pretrain_data": train_cfg.data.name,
        "data": data_cfg.name,
        "backbone": train_cfg.backbone.name,
        "eval": cfg.eval.name,
        **scores,
        "run_dir": cfg.paths.output_dir,
    }
    write_results(results, cfg.paths.output_dir)
    return results
