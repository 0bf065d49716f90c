"""What train.py and eval.py run: a planned pretraining run fitted, evaluated and recorded in results.json
(`pretrain`; the plan: `run/plan.py`), and the evaluation of a checkpoint or of other weights."""

from __future__ import annotations

import logging
from functools import partial

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from selfsup import distributed
from selfsup.checks import check_eval_options
from selfsup.data.datamodule import SSLDataModule, data_values
from selfsup.data.datasets import build_datasets, read_skipped_images
from selfsup.eval.evaluate import embed_evaluation_splits, evaluate_backbone
from selfsup.eval.features import EvaluatedBackbone, EvaluationInput
from selfsup.pictures.publish import save_final_pictures
from selfsup.run.evaluated import build_evaluated, evaluation_data, evaluation_source
from selfsup.run.history import CsvHistory
from selfsup.run.launch import build_trainer, check_launch, training_device
from selfsup.run.plan import RunPlan
from selfsup.run.progress import run_progress
from selfsup.run.results import report_skipped, time_split, timed, training_results, unscored, write_results
from selfsup.run.sweep import is_multirun
from selfsup.tracking import log_eval_run, log_final_results

# Lightning advertises a cloud logger on every run; it is noise in a terminal that matters.
logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(lambda r: "litlogger" not in r.getMessage())


def pretrain(plan: RunPlan) -> dict:
    """Fit the run `plan_run` planned (and checked), evaluate its backbone, write results.json; returns the
    results ({} on ranks other than 0)."""
    cfg, data, resume, seconds = plan.cfg, plan.datamodule, plan.resume, {}
    model = plan.method(cfg)
    if plan.weights is not None and resume is None:  # (resuming, the checkpoint's weights replace them anyway)
        model.start_from(plan.weights)
    if cfg.strategy.split_bn_groups > 1:  # strategy=single_shufflebn: per-device BN of that many devices
        distributed.convert_split_batchnorm(model, cfg.strategy.split_bn_groups)
    trainer = build_trainer(cfg)
    check_launch(cfg, trainer, plan.world, multirun=is_multirun())  # what only the Trainer knows
    csv_history = CsvHistory(trainer.loggers, resume.global_step if resume else None)
    evaluated = EvaluatedBackbone(model.evaluated_backbone(), model.evaluation_input)
    evaluate = partial(evaluate_backbone, evaluated, data, cfg.eval, plan.device, plan.bf16)
    at_init = {}
    if plan.knn_at_init and rank_zero_only.rank == 0:
        with timed(seconds, "init_eval"):
            at_init = evaluate(linear=False)
        print(f"kNN top-1 at init: {at_init['knn_top1']:.4f}", flush=True)

    with timed(seconds, "training"):
        try:
            trainer.fit(model, datamodule=data, ckpt_path=resume.checkpoint if resume else None)
        finally:
            csv_history.merge()
    if not trainer.is_global_zero:
        return {}

    with timed(seconds, "final_eval"):
        features = model.final_eval_features or embed_evaluation_splits(evaluated, data, plan.device, plan.bf16)
        scores = evaluate(features=features) if data.labelled is not None else unscored(cfg)
    progress = run_progress(trainer)  # rank 0's, also when it trained in a spawned process
    skipped = read_skipped_images(plan.skipped_list)
    results = training_results(plan, trainer, progress, at_init, scores, seconds["training"], skipped)
    if cfg.images:
        with timed(seconds, "pictures"):
            save_final_pictures(cfg.paths.output_dir, data, features, trainer.loggers, results)
    results.update(time_split(seconds, progress["monitor_seconds"], plan.started))
    write_results(results, cfg.paths.output_dir)
    report_skipped(skipped, plan.skipped_list)
    log_final_results(trainer.loggers, results, step=progress["steps"])
    return results


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
        log_eval_run(
            cfg.logger.wandb,
            results,
            config,
            group=group,
            name=f"{group}-{data_cfg.name}-{results['backbone']}"
            + (f"-s{train_cfg.seed}" if train_cfg is not None else ""),
        )
    return results
