"""What train.py and eval.py run: pretraining, then the downstream evaluation, then results.json."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.plugins.environments import SLURMEnvironment
from pytorch_lightning.strategies.launchers import _MultiProcessingLauncher
from pytorch_lightning.utilities import rank_zero_only

from selfsup import distributed, reliability
from selfsup.callbacks import CpuThreadsPerRank, ThroughputMonitor
from selfsup.checks import (check_launch, check_run, check_strategy, check_train_config, planned_world_size,
                            requested_devices)
from selfsup.data.datamodule import SSLDataModule
from selfsup.data.datasets import SKIPPED_IMAGES_FILE, read_skipped_images
from selfsup.errors import UserError
from selfsup.eval.features import extract_features
from selfsup.eval.finetune import finetune
from selfsup.eval.knn import knn_top1
from selfsup.eval.linear import linear_probe
from selfsup.models.backbones import build_backbone
from selfsup.tracking import GPUMemoryMonitor, gpu_peak_memory_gb, log_eval_run, log_final_results


# Lightning advertises a cloud logger on every run; it is noise in a terminal that matters.
logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(lambda r: "litlogger" not in r.getMessage())


def _device(trainer_cfg) -> torch.device:
    wants_gpu = trainer_cfg.accelerator in ("auto", "gpu", "cuda")
    return torch.device("cuda", 0) if wants_gpu and torch.cuda.is_available() else torch.device("cpu")


def evaluate_backbone(backbone, datamodule: SSLDataModule, eval_cfg, device, bf16: bool, linear: bool = True,
                      features: tuple[torch.Tensor, ...] | None = None) -> dict:
    """kNN (and the offline linear probe) on frozen, augmentation-free features (embedded here unless
    `features` = (train_x, train_y, val_x, val_y) are given); fine-tuning (eval=finetune) on a copy of
    the backbone."""
    backbone.to(device)
    if features is None:
        train_loader, val_loader = datamodule.evaluation_loaders()
        train_x, train_y = extract_features(backbone, train_loader, device, bf16, "embedding train split")
        val_x, val_y = extract_features(backbone, val_loader, device, bf16, "embedding val split")
    else:
        train_x, train_y, val_x, val_y = (t.to(device) for t in features)
    num_classes = datamodule.cfg.num_classes
    scores = {}
    if eval_cfg.knn is not None:
        scores["knn_top1"] = knn_top1(train_x, train_y, val_x, val_y, num_classes, eval_cfg.knn.k, eval_cfg.knn.temperature)
    if linear and eval_cfg.linear is not None:
        scores.update(linear_probe(train_x, train_y, val_x, val_y, num_classes, **eval_cfg.linear))
    if linear and eval_cfg.get("finetune") is not None:
        scores.update(finetune(backbone, datamodule, eval_cfg.finetune, device, bf16))
    return scores


def write_results(results: dict, output_dir: str) -> Path:
    path = Path(output_dir) / "results.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"results: {path}", flush=True)
    return path


def _trainer(cfg: DictConfig) -> pl.Trainer:
    run_dir = cfg.paths.output_dir
    loggers = [instantiate(c, **reliability.logger_kwargs(c, run_dir)) for c in cfg.logger.values()] if cfg.logger else []
    callbacks = [instantiate(c) for c in cfg.callbacks.values()] if cfg.callbacks else []
    if not cfg.trainer.enable_progress_bar:
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.ProgressBar)]
    callbacks += [ThroughputMonitor(), CpuThreadsPerRank(), reliability.RunState()]
    if torch.cuda.is_available():
        callbacks.append(GPUMemoryMonitor())
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    if trainer_kwargs.get("benchmark") is None:  # cudnn autotuning (fixed input sizes), unless deterministic
        trainer_kwargs["benchmark"] = not trainer_kwargs.get("deterministic")
    return pl.Trainer(
        **trainer_kwargs,
        strategy=cfg.strategy.strategy,
        sync_batchnorm=cfg.strategy.sync_batchnorm,
        # Under SLURM (also via hydra/launcher=submitit_slurm) the ranks are SLURM's tasks, not re-launched;
        # on the requeue signal Lightning saves hpc_ckpt_<n>.ckpt and requeues the job, which resumes.
        plugins=[*([SLURMEnvironment(auto_requeue=True)] if SLURMEnvironment.detect() else []),
                 reliability.AtomicCheckpointIO()],  # temp file + rename: a kill never tears a checkpoint
        logger=loggers,
        callbacks=callbacks,
        default_root_dir=cfg.paths.output_dir,
    )


def resume_path(cfg: DictConfig) -> str | None:
    """The checkpoint `trainer.fit` resumes from: `ckpt_path` when given; under SLURM, after a requeue,
    the newer of Lightning's own requeue checkpoint (hpc_ckpt_<n>.ckpt, which Lightning picks up by
    itself when given None) and this run's checkpoints/last.ckpt (a preemption without the signal)."""
    if cfg.ckpt_path or not SLURMEnvironment.detect():
        return cfg.ckpt_path
    run_dir = Path(cfg.paths.output_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    hpc = [p.stat().st_mtime for p in run_dir.glob("hpc_ckpt_*.ckpt")]
    if last.is_file() and (not hpc or last.stat().st_mtime > max(hpc)):
        return str(last)
    return None


def pretrain(cfg: DictConfig) -> dict:
    check_train_config(cfg)
    check_strategy(cfg, get_class(cfg.method._target_))
    resumed = reliability.resolve_resume(cfg)  # resume=auto; may point paths.output_dir at the run it continues
    if cfg.seed is not None:
        pl.seed_everything(cfg.seed, workers=True, verbose=False)  # (the seed is in the config and results.json)
    datamodule = SSLDataModule(cfg.data, cfg.augmentation, devices_per_node=requested_devices(cfg.trainer.devices) or 1)
    skipped_list = Path(cfg.paths.output_dir) / SKIPPED_IMAGES_FILE
    for dataset in {id(d): d for d in (datamodule.pretrain, datamodule.labelled, datamodule.val)}.values():
        if hasattr(dataset, "log_skipped_to"):  # data.skip_corrupt: one list for all loader workers and ranks
            dataset.log_skipped_to(skipped_list)
    datamodule.complete_config()
    planned_world = planned_world_size(cfg.trainer)
    check_run(cfg, planned_world, datamodule, get_class(cfg.method._target_))  # batch vs data, MoCo queue, method checks
    OmegaConf.resolve(cfg)  # ranks spawned by ddp_spawn have no Hydra context to resolve ${hydra:...} in
    model = get_class(cfg.method._target_)(cfg)
    if cfg.strategy.split_bn_groups > 1:  # strategy=single_shufflebn: per-device BN of that many devices
        distributed.convert_split_batchnorm(model, cfg.strategy.split_bn_groups)
    trainer = _trainer(cfg)
    check_launch(cfg, trainer, multirun=HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN)
    if trainer.world_size != planned_world:
        check_run(cfg, trainer.world_size, datamodule, type(model))
    csv_history = reliability.CsvHistory(trainer.loggers, resumed["global_step"] if resumed else None)

    device, bf16 = _device(cfg.trainer), "bf16" in str(cfg.trainer.precision)
    at_init = {}
    if cfg.eval.knn_at_init and cfg.eval.knn is not None and rank_zero_only.rank == 0:
        at_init = evaluate_backbone(model.backbone, datamodule, cfg.eval, device, bf16, linear=False)
        print(f"kNN top-1 at init: {at_init['knn_top1']:.4f}", flush=True)

    start = time.perf_counter()
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=resumed["checkpoint"] if resumed else resume_path(cfg))
    finally:
        csv_history.merge()
    train_seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return {}

    scores = evaluate_backbone(model.backbone, datamodule, cfg.eval, device, bf16, features=model.final_eval_features)
    throughput = next(c for c in trainer.callbacks if isinstance(c, ThroughputMonitor))
    checkpoint = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else None
    epochs, steps, images_per_sec = trainer.current_epoch, trainer.global_step, throughput.images_per_sec
    if isinstance(trainer.strategy.launcher, _MultiProcessingLauncher):  # ddp_spawn: the ranks ran in
        # child processes and sent back only weights and metrics; progress is in rank 0's checkpoint.
        images_per_sec = float(trainer.callback_metrics.get("train/images_per_sec", 0.0))
        last = Path(trainer.checkpoint_callback.dirpath) / "last.ckpt" if trainer.checkpoint_callback else None
        if last is not None and last.is_file():
            saved = torch.load(last, map_location="cpu", weights_only=False)
            epochs, steps, checkpoint = saved["epoch"] + 1, saved["global_step"], str(last)
    results = {
        "method": cfg.method.name,
        "data": cfg.data.name,
        "backbone": cfg.backbone.name,
        "epochs": epochs,
        "steps": steps,
        "seed": cfg.seed,
        "batch_size": cfg.data.batch_size,
        "global_batch_size": cfg.data.batch_size * trainer.world_size * trainer.accumulate_grad_batches,
        "precision": str(cfg.trainer.precision),
        "knn_top1_at_init": at_init.get("knn_top1"),
        **scores,
        "train_seconds": round(train_seconds, 2),
        "train_images_per_sec": round(images_per_sec, 2),
        "gpu_mem_peak_gb": gpu_peak_memory_gb(),
        "checkpoint": checkpoint or None,
        "run_dir": cfg.paths.output_dir,
        "metrics": {k: v.item() for k, v in trainer.callback_metrics.items() if v.numel() == 1},  # last logged
    }
    skipped = read_skipped_images(skipped_list)
    results.update({
        "skipped_images": len(skipped),  # data.skip_corrupt=true: unreadable images skipped (all workers, ranks)
        "skipped_image_paths": skipped[:100],
        "nonfinite_skipped_batches": reliability.skipped_batches(model),  # on_nonfinite=skip
        "resumed_from": resumed,
    })
    write_results(results, cfg.paths.output_dir)
    reliability.report_skipped_images(skipped, skipped_list)
    log_final_results(trainer.loggers, results, step=trainer.global_step)
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
    transfer = cfg.get("data")  # absent (data: null): the checkpoint's own pretraining data
    data_cfg = transfer if transfer is not None else train_cfg.data
    with open_dict(data_cfg):
        if transfer is not None and transfer.resolution is None:
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
    if (cfg.get("logger") or {}).get("wandb") is not None:
        config = {**OmegaConf.to_container(cfg, resolve=True), "pretrain": OmegaConf.to_container(train_cfg)}
        log_eval_run(cfg.logger.wandb, results, config, group=train_cfg.method.name,
                     name=f"{train_cfg.method.name}-{data_cfg.name}-{train_cfg.backbone.name}-s{train_cfg.seed}")
    return results
