"""The generic config checks that a schema cannot express, run by train.py before torch and
Lightning load, so a mistake costs a second and one line instead of a crash on day two.

Torch-free on purpose. What needs torch, the data or the world size is checked by the run layer
(selfsup/run/launch.py); a method's own rules live in its `check_config` classmethod."""
from __future__ import annotations

import os
from pathlib import Path

from selfsup.data.layout import FOLDER_DATASETS, FOLDER_LAYOUT
from selfsup.errors import UserError
from selfsup.wandb_mode import wandb_mode


BENCHMARK_DATASETS = ("cifar10", "cifar100", "stl10", "imagenet", "imagenet100")
EXPERIMENTS = Path(__file__).resolve().parents[1] / "conf" / "experiment"


def recipe_warning(cfg) -> str | None:
    """The warning for a real benchmark dataset trained without a paper recipe (experiment=, the only
    configs that set data.global_batch_size): the defaults are sized for the digits smoke test."""
    data, method = cfg.data.name, cfg.method.name
    if data not in BENCHMARK_DATASETS or cfg.data.get("global_batch_size") is not None:
        return None
    recipes = sorted(p.stem for p in EXPERIMENTS.glob(f"*_{data}.yaml"))
    own = [r for r in recipes if r.startswith(f"{method}_") or r.startswith(f"{method}v")]
    advice = (f"use experiment={own[0]}" if own else
              f"the recipes for data={data}: " + ", ".join(f"experiment={r}" for r in recipes) if recipes else
              f"no paper recipe exists for data={data} (see conf/experiment/)")
    return (f"WARNING: method={method} data={data} without experiment= trains the small default settings "
            f"(backbone={cfg.backbone.name}, {cfg.trainer.max_epochs} epochs, batch {cfg.data.batch_size} per device), "
            f"not a paper's recipe, so its numbers are not comparable to published ones: {advice}")


def check_global_batch(cfg, world: int) -> None:
    """A recipe's published global batch is kept whatever the device count: refuse a per-device batch
    that no longer multiplies up to it, naming the one that does."""
    wanted = cfg.data.get("global_batch_size")
    if wanted is None:
        return
    accumulate = cfg.trainer.accumulate_grad_batches
    actual = cfg.data.batch_size * world * accumulate
    if actual == wanted:
        return
    per_device, rest = divmod(wanted, world * accumulate)
    fix = (f"set data.batch_size={per_device}" if not rest and per_device > 0 else
           "use a device count that divides it (or trainer.accumulate_grad_batches)")
    raise UserError(f"the recipe's global batch is data.global_batch_size={wanted}, but data.batch_size="
                    f"{cfg.data.batch_size} x {world} devices x {accumulate} accumulation = {actual}: {fix} to keep "
                    f"it, or data.global_batch_size={actual} to change the recipe")


def check_train_config(cfg) -> None:
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
    check_inputs(cfg)
    warning = recipe_warning(cfg)
    if warning and os.environ.get("RANK", "0") == "0":  # once, not per rank of a torchrun / SLURM launch
        print(warning, flush=True)


# --- devices and strategies -------------------------------------------------------------------
def requested_devices(devices) -> int | None:
    """How many devices per node `trainer.devices` asks for; None for "auto" / -1 (all there are)."""
    if isinstance(devices, bool):
        return None
    if isinstance(devices, int):
        return None if devices == -1 else devices
    if isinstance(devices, str):
        text = devices.strip()
        if text in ("auto", "-1"):
            return None
        if "," in text:
            return len([d for d in text.split(",") if d.strip()])
        return int(text) if text.isdigit() else None
    try:
        return len(list(devices))  # a list of device indices
    except TypeError:
        return None


# --- inputs, data, logging (issue 8: fail before training, in one line) -----------------------
IMAGE_CHANNELS = 3  # every dataset is loaded as RGB (digits and grey folders too)
RESUME_MODES = {"auto": True, "true": True, "never": False, "false": False, "none": False, "off": False}
NONFINITE_MODES = ("stop", "skip")


def resume_enabled(value) -> bool:
    """`resume`: auto (continue the run directory's last checkpoint, see selfsup/run/resume.py)
    or never; true/false are accepted as synonyms."""
    key = str(value).strip().lower()
    if key not in RESUME_MODES:
        raise UserError(f"resume={value} is not a resume mode: use resume=auto (continue the last run of this "
                        "command) or resume=never (always start afresh)")
    return RESUME_MODES[key]


def check_inputs(cfg) -> None:
    _check_schema_keys(cfg)
    _check_missing_values(cfg)
    _check_ranges(cfg)
    _check_run_options(cfg)
    _check_data_root(cfg.data)
    _check_normalisation(cfg.data)
    _check_warmup(cfg)
    _check_devices(cfg)
    _check_precision(cfg.trainer)
    _check_cpu_devices(cfg.trainer)
    _check_wandb(cfg)


def _check_schema_keys(cfg) -> None:
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
                    raise UserError(f"unknown key '{prefix}{key}'{hint}: the {schema.__name__} schema has no such "
                                    "setting, so a '+' override cannot add it (`python train.py --cfg job` lists every key)")
        for key in node.keys():
            walk(node._get_node(key), f"{prefix}{key}.")

    walk(cfg, "")


def _check_missing_values(cfg) -> None:
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
        hint = f" (the data root, {FOLDER_LAYOUT})" if key == "data.root" else ""
        more = f" (and {', '.join(missing[1:])})" if len(missing) > 1 else ""
        raise UserError(f"{key} is not set{more}: pass {key}=<value>{hint}")


def _check_ranges(cfg) -> None:
    trainer = cfg.trainer
    if trainer.max_steps is not None and trainer.max_steps != -1 and trainer.max_steps <= 0:
        raise UserError(f"trainer.max_steps must be > 0 (or -1: bounded by max_epochs), got {trainer.max_steps}")
    every = trainer.check_val_every_n_epoch
    if every != "auto" and not (isinstance(every, int) and every >= 1):
        raise UserError(f"trainer.check_val_every_n_epoch={every} must be auto (the kNN monitor takes ~5% of the "
                        "training compute) or an epoch count >= 1")
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
        raise UserError("eval.linear (the probe) and eval.linear_standard both report linear_top1: use "
                        "eval=linear_standard for the papers' protocol or eval=linear for the fast probe")
    fraction = eval_cfg.get("label_fraction")
    if fraction is not None and not 0 < fraction <= 1:
        raise UserError(f"eval.label_fraction={fraction} must be in (0, 1]: e.g. 0.01 or 0.1 (null: every label)")


def _check_run_options(cfg) -> None:
    resume_enabled(cfg.get("resume", "auto"))
    mode = cfg.get("on_nonfinite", "stop")
    if mode not in NONFINITE_MODES:
        raise UserError(f"on_nonfinite={mode} is not a choice: use on_nonfinite=stop (stop the run, the default) "
                        "or on_nonfinite=skip (skip the batch)")
    step = cfg.get("inject_nan_at_step")
    if step is not None and step < 0:
        raise UserError(f"inject_nan_at_step must be >= 0 (a global step), got {step}")
    last = (cfg.get("callbacks") or {}).get("last")
    if last is not None:
        for key in ("every_n_steps", "every_n_epochs"):
            value = last.get(key)
            if value is not None and value < 1:
                raise UserError(f"callbacks.last.{key} must be >= 1 or null, got {value}")


def _check_data_root(data) -> None:
    if data.name not in FOLDER_DATASETS:
        return  # torchvision datasets name their own missing files when they are built
    if not data.root:
        raise UserError(f"data.root is not set: pass data.root=<a folder laid out as {FOLDER_LAYOUT}>")
    root = Path(str(data.root)).expanduser()
    if not root.is_dir():
        what = "is a file, not a directory" if root.exists() else "does not exist"
        raise UserError(f"data root {root} {what}: point data.root at a folder laid out as {FOLDER_LAYOUT}")
    if not any(root.iterdir()):
        raise UserError(f"data root {root} is empty: point data.root at a folder laid out as {FOLDER_LAYOUT}")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise UserError(f"data root {root} has no {split}/ folder: expected {FOLDER_LAYOUT}")
    if data.class_list and not Path(str(data.class_list)).expanduser().is_file():
        raise UserError(f"data.class_list={data.class_list} does not exist: point it at a file naming one class per line")


def _check_normalisation(data) -> None:
    for key in ("mean", "std"):
        values = data[key]
        if len(values) != IMAGE_CHANNELS:
            raise UserError(f"data.{key}={list(values)} has {len(values)} values but the images reach the model as "
                            f"{IMAGE_CHANNELS} channels (RGB): give one value per channel, e.g. data.{key}=[a,b,c]")
    if any(v <= 0 for v in data.std):
        raise UserError(f"data.std={list(data.std)} must be > 0 per channel: the images are divided by it")


def _check_warmup(cfg) -> None:
    """A warm-up longer than the run never reaches the base LR, and the cosine never starts."""
    warmup, epochs = cfg.scheduler.warmup_epochs, cfg.trainer.max_epochs
    if cfg.scheduler.name == "warmup_cosine" and cfg.trainer.max_steps == -1 and warmup > epochs:
        raise UserError(f"scheduler.warmup_epochs={warmup} is longer than the run (trainer.max_epochs={epochs}): the LR "
                        f"would never reach its base value; set scheduler.warmup_epochs<={epochs} (e.g. "
                        f"{max(0, epochs // 10)}) or train longer")


def _check_devices(cfg) -> None:
    """What Lightning would refuse with a traceback (the device count against the machine: run/launch.py)."""
    devices, wanted = cfg.trainer.devices, requested_devices(cfg.trainer.devices)
    if wanted is not None and wanted < 1 or isinstance(devices, float) or (
            isinstance(devices, str) and wanted is None and devices.strip() not in ("auto", "-1")):
        raise UserError(f"trainer.devices={devices} is not a device count: use trainer.devices=auto (every GPU, or "
                        "one CPU process), a count >= 1, -1, or a list of GPU indices like [0,1]")
    if cfg.trainer.num_nodes is None or cfg.trainer.num_nodes < 1:
        raise UserError(f"trainer.num_nodes must be >= 1, got {cfg.trainer.num_nodes}")


PRECISIONS = ("64-true", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "transformer-engine",
              "transformer-engine-float16", "64", "32", "16", "bf16")


def _check_precision(trainer) -> None:
    node = trainer._get_node("precision")
    if node._is_interpolation():  # ${auto_precision:}: a valid choice, and resolving it imports torch
        return
    if str(trainer.precision) not in PRECISIONS:
        raise UserError(f"trainer.precision={trainer.precision} is not a precision: use one of "
                        f"{', '.join(PRECISIONS[:6])} (bf16-mixed on GPUs since Ampere and on bf16 CPUs)")


def _check_cpu_devices(trainer) -> None:
    wanted = requested_devices(trainer.devices)
    if str(trainer.accelerator) == "cpu" and wanted is not None:
        cores = len(os.sched_getaffinity(0))
        if wanted < 1 or wanted > cores:
            raise UserError(f"trainer.devices={trainer.devices} CPU processes but this machine gives this job "
                            f"{cores} cores: set trainer.devices to 1..{cores}")


def _check_wandb(cfg) -> None:
    for logger in (cfg.get("logger") or {}).values():
        if "wandb" in str(logger.get("_target_", "")).lower():
            wandb_mode(logger.get("offline"))  # online asked without an API key: UserError
