"""The config's own values: keys the schema lacks, `???` left unset, ranges, the run options."""

from __future__ import annotations

import re

from selfsup.data.layout import FOLDER_LAYOUT, IMAGES_LAYOUT, UNLABELLED_DATASETS
from selfsup.errors import UserError

RESUME_MODES = {"auto": True, "true": True, "never": False, "false": False, "none": False, "off": False}
NONFINITE_MODES = ("stop", "skip")


def check_values(cfg) -> None:
    """What every run needs positive (lr, batch size, epochs, a loss's temperature), and a usable resolution."""
    positive = {
        "optimizer.lr": cfg.optimizer.lr,
        "data.batch_size": cfg.data.batch_size,
    }
    if cfg.trainer.max_steps == -1:
        positive["trainer.max_epochs"] = cfg.trainer.max_epochs
    if "temperature" in cfg.loss:
        positive["loss.temperature"] = cfg.loss.temperature
    for key, value in positive.items():
        if value is None or value <= 0:
            raise UserError(f"{key} must be > 0, got {value}: set {key}=<positive value>")
    if cfg.data.resolution is not None and cfg.data.resolution < 8:
        raise UserError(f"data.resolution={cfg.data.resolution} is too small: use at least 8 pixels")
    if cfg.optimizer.weight_decay < 0:  # a negative decay pushes the weights away from 0: they grow without bound
        raise UserError(f"optimizer.weight_decay must be >= 0 (0: none), got {cfg.optimizer.weight_decay}")


def check_schema_keys(cfg) -> None:
    """`+group.key=...` adds a key even to a schema-checked group; refuse what the schema lacks."""
    import dataclasses

    from omegaconf import DictConfig, OmegaConf

    def walk(node, prefix):
        if not isinstance(node, DictConfig):
            return
        schema = OmegaConf.get_type(node)
        if dataclasses.is_dataclass(schema):
            fields = {f.name for f in dataclasses.fields(schema)}
            if schema.__name__ == "TrainerConfig" and set(node.keys()) - fields:
                import inspect  # `+trainer.<arg>=...` passes any other pl.Trainer argument through

                import pytorch_lightning as pl

                fields |= set(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}
            for key in node.keys():
                if key not in fields:
                    import difflib

                    close = difflib.get_close_matches(str(key), sorted(fields), n=1)
                    hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
                    raise UserError(
                        f"unknown key '{prefix}{key}'{hint}: the {schema.__name__} schema has no such "
                        "setting, so a '+' override cannot add it (`python train.py --cfg job` lists every key)"
                    )
        for key in node.keys():
            walk(node._get_node(key), f"{prefix}{key}.")

    walk(cfg, "")


def check_missing_values(cfg) -> None:
    """`???` values left unset (OmegaConf.missing_keys would resolve every interpolation, and
    ${auto_precision:} imports torch: walk the nodes instead)."""
    from omegaconf import DictConfig

    missing = []

    def walk(node, prefix):
        for key in node.keys():
            child = node._get_node(key)
            if child is not None and child._is_missing():
                missing.append(f"{prefix}{key}")
            elif isinstance(child, DictConfig):
                walk(child, f"{prefix}{key}.")

    walk(cfg, "")
    if missing:
        key = missing[0]
        layout = IMAGES_LAYOUT if cfg.data.get("name") in UNLABELLED_DATASETS else FOLDER_LAYOUT
        hint = f" (the data root, {layout})" if key == "data.root" else ""
        more = f" (and {', '.join(missing[1:])})" if len(missing) > 1 else ""
        raise UserError(f"{key} is not set{more}: pass {key}=<value>{hint}")


def check_ranges(cfg) -> None:
    trainer = cfg.trainer
    if trainer.max_steps is not None and trainer.max_steps != -1 and trainer.max_steps <= 0:
        raise UserError(f"trainer.max_steps must be > 0 (or -1: bounded by max_epochs), got {trainer.max_steps}")
    every = trainer.check_val_every_n_epoch
    if every != "auto" and not (isinstance(every, int) and every >= 1):
        raise UserError(
            f"trainer.check_val_every_n_epoch={every} must be auto (the kNN monitor takes ~5% of the "
            "training compute) or an epoch count >= 1"
        )
    check_eval_options(cfg.eval)
    if cfg.data.num_workers is not None and cfg.data.num_workers < 0:
        raise UserError(f"data.num_workers must be >= 0 (0: load in the main process), got {cfg.data.num_workers}")
    if cfg.trainer.accumulate_grad_batches < 1:
        raise UserError(f"trainer.accumulate_grad_batches must be >= 1, got {cfg.trainer.accumulate_grad_batches}")


def check_eval_options(eval_cfg) -> None:
    """The eval group's rules (train.py and eval.py)."""
    knn = eval_cfg.get("knn")
    if knn is not None:
        for key in ("k", "temperature"):
            if knn[key] is None or knn[key] <= 0:
                raise UserError(f"eval.knn.{key} must be > 0, got {knn[key]}: set eval.knn.{key}=<positive value>")
    if eval_cfg.get("linear") is not None and eval_cfg.get("linear_standard") is not None:
        raise UserError(
            "eval.linear (the probe) and eval.linear_standard both report linear_top1: use "
            "eval=linear_standard for the papers' protocol or eval=linear for the fast probe"
        )
    fraction = eval_cfg.get("label_fraction")
    if fraction is not None and not 0 < fraction <= 1:
        raise UserError(f"eval.label_fraction={fraction} must be in (0, 1]: e.g. 0.01 or 0.1 (null: every label)")
    if eval_cfg.get("finetune") is not None:
        check_finetune_options(eval_cfg.finetune)


# timm's RandAugment string (timm.data.auto_augment.rand_augment_transform): rand, then -m9, -n2, -mstd0.5, ...
RANDAUGMENT = re.compile(r"rand(-(m|n|mmax|inc)\d+|-(mstd|p)\d+(\.\d+)?|-t\w+)*")


def check_finetune_options(finetune) -> None:
    """What fine-tuning (selfsup/eval/finetune.py) would refuse after pretraining, refused before it."""
    if not 0 < finetune.layer_decay <= 1:
        raise UserError(
            f"eval.finetune.layer_decay={finetune.layer_decay} must be in (0, 1] (1: no decay; MAE: 0.65 ViT-B)"
        )
    for key in ("drop_path", "random_erasing"):  # .get: a config saved before these options existed
        if not 0 <= finetune.get(key, 0.0) < 1:
            raise UserError(f"eval.finetune.{key}={finetune[key]} is a probability: use a value in [0, 1)")
    for key in ("mixup", "cutmix"):
        if finetune.get(key, 0.0) < 0:
            raise UserError(f"eval.finetune.{key}={finetune[key]} is a Beta(alpha, alpha)'s alpha: use >= 0 (0: off)")
    randaugment = finetune.get("randaugment")
    if randaugment is not None and not RANDAUGMENT.fullmatch(randaugment):
        raise UserError(
            f"eval.finetune.randaugment={randaugment} is not timm's RandAugment string: "
            "e.g. rand-m9-mstd0.5-inc1 (MAE's; null: off)"
        )


def resume_enabled(value) -> bool:
    """`resume`: auto (continue the run directory's last checkpoint, see selfsup/run/resume.py)
    or never; true/false are accepted as synonyms."""
    key = str(value).strip().lower()
    if key not in RESUME_MODES:
        raise UserError(
            f"resume={value} is not a resume mode: use resume=auto (continue the last run of this "
            "command) or resume=never (always start afresh)"
        )
    return RESUME_MODES[key]


def check_run_options(cfg) -> None:
    resume_enabled(cfg.get("resume", "auto"))
    mode = cfg.get("on_nonfinite", "stop")
    if mode not in NONFINITE_MODES:
        raise UserError(
            f"on_nonfinite={mode} is not a choice: use on_nonfinite=stop (stop the run, the default) "
            "or on_nonfinite=skip (skip the batch)"
        )
    step = cfg.get("inject_nan_at_step")
    if step is not None and step < 0:
        raise UserError(f"inject_nan_at_step must be >= 0 (a global step), got {step}")
    last = (cfg.get("callbacks") or {}).get("last")
    if last is not None:
        for key in ("every_n_steps", "every_n_epochs"):
            value = last.get(key)
            if value is not None and value < 1:
                raise UserError(f"callbacks.last.{key} must be >= 1 or null, got {value}")


def check_warmup(cfg) -> None:
    """A warm-up longer than the run never reaches the base LR, and the cosine never starts."""
    warmup, epochs = cfg.scheduler.warmup_epochs, cfg.trainer.max_epochs
    if cfg.scheduler.name == "warmup_cosine" and cfg.trainer.max_steps == -1 and warmup > epochs:
        raise UserError(
            f"scheduler.warmup_epochs={warmup} is longer than the run (trainer.max_epochs={epochs}): the LR "
            f"would never reach its base value; set scheduler.warmup_epochs<={epochs} (e.g. "
            f"{max(0, epochs // 10)}) or train longer"
        )
