"""What train.py and eval.py run: pretraining, then the downstream evaluation, then results.json."""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path

import pytorch_lightning as pl
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.utilities import rank_zero_only

from selfsup import distributed
from selfsup.checks import check_eval_options, eval_data, requested_devices
from selfsup.data.datamodule import SSLDataModule, completed_config, data_values
from selfsup.data.datasets import SKIPPED_IMAGES_FILE, build_datasets, read_skipped_images
from selfsup.eval.evaluate import embed_evaluation_splits, evaluate_backbone
from selfsup.eval.features import EvaluatedBackbone, EvaluationInput
from selfsup.models.weights import check_backbone, find_weights
from selfsup.pictures.publish import save_final_pictures
from selfsup.run.checkpoint import ResumeCheckpoint
from selfsup.run.evaluated import build_evaluated, evaluation_data, evaluation_source
from selfsup.run.history import CsvHistory
from selfsup.run.launch import (build_trainer, check_launch, check_run, check_strategy, planned_world_size,
                                training_device)
from selfsup.run.progress import PREFIX as PROGRESS, run_progress
from selfsup.run.results import write_results
from selfsup.run.resume import resume_point
from selfsup.run.sweep import is_multirun
from selfsup.tracking import gpu_peak_memory_gb, log_eval_run, log_final_results

# Lightning advertises a cloud logger on every run; it is noise in a terminal that matters.
logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(lambda r: "litlogger" not in r.getMessage())


def pretrain(cfg: DictConfig) -> dict:
    """Train `cfg` (already through `checks.check_train_config`, as train.py does before torch loads),
    evaluate the backbone, write results.json; returns the results ({} on ranks other than 0).

    Everything that can be checked is checked once, before anything is built that takes time: the
    devices and strategy, the checkpoint to continue from, then, with the data known, the batch
    against the data and the method's own rules at the world size the Trainer will have."""
    started = time.perf_counter()
    method = get_class(cfg.method._target_)
    check_strategy(cfg, method)
    resume = resume_point(cfg)  # may point paths.output_dir at the run it continues
    weights = find_weights(cfg.weights) if cfg.get("weights") else None  # warm start, located before any work
    if weights is not None:
        check_backbone(weights, cfg.backbone.name)
    if cfg.seed is not None:
        pl.seed_everything(cfg.seed, workers=True, verbose=False)  # (the seed is in the config and results.json)
    world = planned_world_size(cfg.trainer)
    scored_data = eval_data(cfg)  # eval.data: the labelled splits come from it
    datasets = build_datasets(cfg.data, scored_data)
    skipped_list = Path(cfg.paths.output_dir) / SKIPPED_IMAGES_FILE
    for dataset in {id(d): d for d in datasets}.values():
        if hasattr(dataset, "log_skipped_to"):  # data.skip_corrupt: one list for all loader workers and ranks
            dataset.log_skipped_to(skipped_list)
    cfg = completed_config(cfg, datasets, scored_data)  # data.resolution / num_classes from the data: other groups interpolate them
    datamodule = SSLDataModule(cfg.data, cfg.augmentation, devices_per_node=requested_devices(cfg.trainer.devices) or 1,
                               datasets=datasets)
    check_run(cfg, world, datamodule, method)
    with open_dict(cfg):
        if datamodule.labelled is None:  # no labels: no kNN monitor
            cfg.trainer.limit_val_batches = 0
        cfg.trainer.check_val_every_n_epoch = monitor_interval(cfg, datamodule)
    OmegaConf.resolve(cfg)  # ranks spawned by ddp_spawn have no Hydra context to resolve ${hydra:...} in
    model = method(cfg)
    if weights is not None and resume is None:  # (resuming, the checkpoint's weights replace them anyway)
        model.start_from(weights)
    if cfg.strategy.split_bn_groups > 1:  # strategy=single_shufflebn: per-device BN of that many devices
        distributed.convert_split_batchnorm(model, cfg.strategy.split_bn_groups)
    trainer = build_trainer(cfg)
    check_launch(cfg, trainer, world, multirun=is_multirun())
    csv_history = CsvHistory(trainer.loggers, resume.global_step if resume else None)

    device, bf16 = training_device(cfg.trainer), "bf16" in str(cfg.trainer.precision)
    evaluated = EvaluatedBackbone(model.evaluated_backbone(), model.evaluation_input)
    at_init, seconds = {}, {}
    if cfg.eval.knn_at_init and cfg.eval.knn is not None and datamodule.labelled is not None and rank_zero_only.rank == 0:
        start = time.perf_counter()
        at_init = evaluate_backbone(evaluated, datamodule, cfg.eval, device, bf16, linear=False)
        seconds["init_eval"] = time.perf_counter() - start
        print(f"kNN top-1 at init: {at_init['knn_top1']:.4f}", flush=True)

    start = time.perf_counter()
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume.checkpoint if resume else None)
    finally:
        csv_history.merge()
    train_seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return {}

    start = time.perf_counter()
    features = model.final_eval_features or embed_evaluation_splits(evaluated, datamodule, device, bf16)
    if datamodule.labelled is None:
        scores = {"eval_skipped": f"data={cfg.data.name} has no labels and eval.data is not set: pass eval.data=<a "
                                  "labelled folder or a dataset name, e.g. cifar10> for kNN and linear scores"}
    else:
        scores = evaluate_backbone(evaluated, datamodule, cfg.eval, device, bf16, features=features)
    seconds["final_eval"] = time.perf_counter() - start
    progress = run_progress(trainer)  # rank 0's, also when it trained in a spawned process
    seconds.update(training=train_seconds - progress["monitor_seconds"], monitor=progress["monitor_seconds"])
    global_batch = cfg.data.batch_size * trainer.world_size * trainer.accumulate_grad_batches
    last = next((c.path for c in trainer.callbacks if isinstance(c, ResumeCheckpoint)), None)
    skipped = read_skipped_images(skipped_list)
    results = {
        "method": cfg.method.name,
        "primary_eval": cfg.method.primary_eval,  # the evaluation the method's paper leads with (MAE: finetune)
        "data": cfg.data.name,
        "backbone": cfg.backbone.name,
        "encoder": cfg.method.get("eval_encoder", "online"),  # the evaluated one (momentum: the EMA copy)
        "epochs": progress["epochs"],
        "steps": progress["steps"],
        "seed": cfg.seed,
        "batch_size": cfg.data.batch_size,
        "global_batch_size": global_batch,
        "images_seen": progress["steps"] * global_batch,
        "eval_data": cfg.eval.get("data"),
        "precision": str(cfg.trainer.precision),
        "knn_top1_at_init": at_init.get("knn_top1"),
        **scores,
        "train_seconds": round(train_seconds, 2),
        "train_images_per_sec": round(progress["images_per_sec"], 2),
        "gpu_mem_peak_gb": gpu_peak_memory_gb(),
        "checkpoint": str(last) if last is not None and last.is_file() else None,
        "run_dir": cfg.paths.output_dir,
        "metrics": {k: v.item() for k, v in trainer.callback_metrics.items()  # the last logged
                    if v.numel() == 1 and not k.startswith(PROGRESS)},
        "skipped_images": len(skipped),  # data.skip_corrupt=true: unreadable images skipped (all workers, ranks)
        "skipped_image_paths": skipped[:100],
        "nonfinite_skipped_batches": progress["nonfinite_skipped_batches"],  # on_nonfinite=skip
        "resumed_from": dataclasses.asdict(resume) if resume else None,
        "weights": weights.record() if weights is not None else None,  # weights=: the warm start's origin
    }
    if cfg.images:
        start = time.perf_counter()
        save_final_pictures(cfg.paths.output_dir, datamodule, features, trainer.loggers, results)
        seconds["pictures"] = time.perf_counter() - start
    # Where the wall-clock went: evaluation = kNN at init + the per-epoch monitor + the final evaluation.
    seconds["total"] = time.perf_counter() - started
    evaluating = seconds.get("init_eval", 0.0) + seconds["monitor"] + seconds["final_eval"]
    results.update(seconds={key: round(value, 2) for key, value in seconds.items()},
                   eval_fraction=round(evaluating / seconds["total"], 4))
    write_results(results, cfg.paths.output_dir)
    if skipped:
        shown = ", ".join(skipped[:5]) + (f", ... ({len(skipped) - 5} more)" if len(skipped) > 5 else "")
        print(f"skipped {len(skipped)} unreadable images: {shown} (data.skip_corrupt=true; all listed in "
              f"{skipped_list})", flush=True)
    log_final_results(trainer.loggers, results, step=progress["steps"])
    return results


MONITOR_SHARE = 0.05  # trainer.check_val_every_n_epoch=auto: the kNN monitor's share of the training compute


def monitor_interval(cfg: DictConfig, datamodule: SSLDataModule) -> int:
    """trainer.check_val_every_n_epoch, with `auto` resolved so that the kNN monitor (one forward of the
    memory bank and the val split) costs at most about MONITOR_SHARE of the training (forward + backward,
    ~3 forwards, of every view of every training image), at an interval that divides trainer.max_epochs:
    the last epoch is always monitored, and that one is free, since the final evaluation reuses its
    features (it embeds the same images with the same weights)."""
    every = cfg.trainer.check_val_every_n_epoch
    if every != "auto" or datamodule.labelled is None:  # (no labels: no monitor, limit_val_batches=0)
        return every if every != "auto" else 1
    bank = min(len(datamodule.labelled), cfg.data.knn_bank_size or len(datamodule.labelled))
    train_cost = 3 * len(datamodule.pretrain) * len(cfg.augmentation.views)
    every = max(1, math.ceil((bank + len(datamodule.val)) / (MONITOR_SHARE * train_cost)))
    epochs = cfg.trainer.max_epochs
    if epochs and epochs > 0:
        every = min(n for n in range(every, epochs + 1) if epochs % n == 0) if every <= epochs else epochs
    if rank_zero_only.rank == 0:
        print(f"kNN monitor every {every} epoch{'s' if every > 1 else ''} (trainer.check_val_every_n_epoch=auto: "
              f"~{MONITOR_SHARE:.0%} of the training compute)", flush=True)
    return every


def evaluate_checkpoint(cfg: DictConfig) -> dict:
    """Frozen-feature evaluation of a checkpoint's backbone (its online or momentum encoder) or of other
    weights (weights=), on the checkpoint's own data or another (transfer, eval.data)."""
    check_eval_options(cfg.eval)
    source = evaluation_source(cfg)
    data_cfg = evaluation_data(cfg, source)
    datasets = build_datasets(data_cfg)
    data_cfg = OmegaConf.merge(data_cfg, data_values(data_cfg, datasets))
    datamodule = SSLDataModule(data_cfg, None, datasets=datasets)

    backbone = build_evaluated(cfg, source, data_cfg)
    backbone = EvaluatedBackbone(backbone, EvaluationInput(source.evaluation_input, data_cfg.mean, data_cfg.std))
    device = training_device(cfg.trainer)
    bf16 = "bf16" in str(cfg.trainer.precision)
    features = embed_evaluation_splits(backbone.to(device), datamodule, device, bf16)
    scores = evaluate_backbone(backbone, datamodule, cfg.eval, device, bf16, features=features)
    train_cfg = source.pretrain_cfg
    results = {
        **source.record,
        "data": data_cfg.name,
        "backbone": train_cfg.backbone.name if train_cfg is not None else source.record["backbone"],
        "eval": cfg.eval.name,
        **scores,
        "run_dir": cfg.paths.output_dir,
    }
    write_results(results, cfg.paths.output_dir)
    if cfg.images:  # the nearest neighbours and the embedding map of the evaluated features (no curves: no training)
        save_final_pictures(cfg.paths.output_dir, datamodule, features, [], results)
    if (cfg.get("logger") or {}).get("wandb") is not None:
        pretrain = OmegaConf.to_container(train_cfg) if train_cfg is not None else None
        config = {**OmegaConf.to_container(cfg, resolve=True), "pretrain": pretrain}
        group = results["method"] or f"weights-{source.weights.kind}"
        log_eval_run(cfg.logger.wandb, results, config, group=group,
                     name=f"{group}-{data_cfg.name}-{results['backbone']}"
                          + (f"-s{train_cfg.seed}" if train_cfg is not None else ""))
    return results
