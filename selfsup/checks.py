"""Semantic checks that a schema cannot express, run before anything is built, so a mistake
costs a second and one line instead of a crash on day two."""
from __future__ import annotations

from pathlib import Path

from selfsup.errors import UserError


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


def check_strategy(cfg, method_class) -> None:
    """Strategy / device mistakes as one line at start-up, before data or model are built."""
    import torch

    strategy, trainer = cfg.strategy, cfg.trainer
    accelerator = str(trainer.accelerator)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and gpus == 0)
    if strategy.sync_batchnorm and on_cpu:
        raise UserError(
            f"strategy={strategy.name} needs GPUs: torch.nn.SyncBatchNorm does not run on CPU; use strategy=ddp on CPU"
        )
    if accelerator in ("gpu", "cuda") and gpus == 0:
        raise UserError(f"trainer.accelerator={accelerator} but no CUDA GPU is visible: use trainer.accelerator=cpu")
    wanted = requested_devices(trainer.devices)
    if accelerator in ("gpu", "cuda", "auto") and gpus > 0 and wanted is not None and wanted > gpus:
        raise UserError(
            f"trainer.devices={trainer.devices} asks for {wanted} GPUs per node but {gpus} are visible here: "
            f"set trainer.devices to at most {gpus} (nodes: trainer.num_nodes)"
        )
    groups = strategy.split_bn_groups
    if groups < 1:
        raise UserError(f"strategy.split_bn_groups must be >= 1, got {groups}")
    if groups > 1 and cfg.data.batch_size % groups:
        raise UserError(
            f"data.batch_size={cfg.data.batch_size} does not split into strategy.split_bn_groups={groups} "
            f"equal BatchNorm groups: use a batch size that is a multiple of {groups}"
        )
    if strategy.shuffle_bn and not hasattr(method_class, "_encode_keys"):
        raise UserError(
            f"strategy={strategy.name} shuffles the key batch of a momentum-encoder method (MoCo), but "
            f"method={cfg.method.name} has no key encoder: use strategy=ddp or ddp_syncbn"
        )


def check_launch(cfg, trainer, multirun: bool) -> None:
    """What is only known once the Trainer has resolved devices, nodes and cluster environment."""
    from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    strategy = cfg.strategy
    if strategy.shuffle_bn and trainer.world_size == 1 and strategy.split_bn_groups == 1:
        raise UserError(
            f"strategy={strategy.name} on one device would shuffle keys within a single BatchNorm batch, "
            "which does not stop MoCo from cheating through BN: use strategy=single_shufflebn on one device"
        )
    launcher = getattr(trainer.strategy, "launcher", None)
    relaunches = (isinstance(launcher, _SubprocessScriptLauncher) and trainer.num_devices > 1
                  and not launcher.cluster_environment.creates_processes_externally)  # SLURM starts its own
    if multirun and relaunches:
        raise UserError(
            f"strategy={strategy.name} on {trainer.num_devices} devices re-launches train.py once per rank, "
            "which inside a multirun (-m) would re-run the sweep: use strategy=ddp_spawn in multiruns"
        )


# --- inputs, data, checkpoints, logging (issue 8: fail before training, in one line) -----------
# Everything here runs before torch or Lightning is imported (train.py calls check_train_config
# first), except the few checks that need torch, which import it themselves and come last.
RESUME_MODES = {"auto": True, "true": True, "never": False, "false": False, "none": False, "off": False}
NONFINITE_MODES = ("stop", "skip")
FOLDER_DATASETS = ("folder", "imagenet", "imagenet100")
FOLDER_LAYOUT = "<root>/train/<class>/<image> and <root>/val/<class>/<image>"
PERMUTATION_DIR = Path(__file__).parent / "data"


def resume_enabled(value) -> bool:
    """`resume`: auto (continue the run directory's last checkpoint, see selfsup/reliability.py)
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
    _check_pretext(cfg, cfg.data.resolution)
    _check_cpu_devices(cfg.trainer)
    if cfg.ckpt_path:
        check_checkpoint(cfg.ckpt_path, cfg.method.name)
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
    knn = cfg.eval.get("knn")
    if knn is not None:
        for key in ("k", "temperature"):
            if knn[key] is None or knn[key] <= 0:
                raise UserError(f"eval.knn.{key} must be > 0, got {knn[key]}: set eval.knn.{key}=<positive value>")
    if cfg.data.num_workers is not None and cfg.data.num_workers < 0:
        raise UserError(f"data.num_workers must be >= 0 (0: load in the main process), got {cfg.data.num_workers}")
    if cfg.trainer.accumulate_grad_batches < 1:
        raise UserError(f"trainer.accumulate_grad_batches must be >= 1, got {cfg.trainer.accumulate_grad_batches}")
    momentum = cfg.method.get("momentum")
    if isinstance(momentum, (int, float)) and not 0.0 <= momentum <= 1.0:
        raise UserError(f"method.momentum must be in [0, 1], got {momentum}")
    queue = cfg.method.get("queue_size")
    if isinstance(queue, int) and queue <= 0:
        raise UserError(f"method.queue_size must be > 0, got {queue}")


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


def _check_pretext(cfg, resolution) -> None:
    """Pretext-task settings that only fail deep in the first step otherwise."""
    method = cfg.method
    count = method.get("num_permutations")
    if count is not None:
        available = sorted(int(p.stem.rsplit("_", 1)[1]) for p in PERMUTATION_DIR.glob("jigsaw_permutations_*.npy"))
        if count not in available:
            raise UserError(f"method.num_permutations={count}: no stored jigsaw permutation set of that size; use one "
                            f"of {available} or generate it with scripts/make_jigsaw_permutations.py --counts {count}")
    mask = method.get("mask")
    if mask is not None and mask.get("area") is not None:
        area = mask.area
        if not 0.0 < area < 1.0:
            raise UserError(f"method.mask.area={area} must be in (0, 1), the fraction of the image the mask hides "
                            "(the paper: 0.25)")
        if resolution:
            side = round((area * resolution * resolution) ** 0.5)
            if mask.kind in ("central", "random_block") and not 1 <= side <= resolution:
                raise UserError(f"a {mask.kind} mask of method.mask.area={area} (side {side}px) does not fit the "
                                f"{resolution}px image: lower method.mask.area or raise data.resolution")
            block = mask.get("block_size")
            if mask.kind == "random_region" and block is not None and not 1 <= block <= resolution:
                raise UserError(f"method.mask.block_size={block} is larger than the {resolution}px image: "
                                f"use 1..{resolution} or null")


def _check_cpu_devices(trainer) -> None:
    import os

    wanted = requested_devices(trainer.devices)
    if str(trainer.accelerator) == "cpu" and wanted is not None:
        cores = len(os.sched_getaffinity(0))
        if wanted < 1 or wanted > cores:
            raise UserError(f"trainer.devices={trainer.devices} CPU processes but this machine gives this job "
                            f"{cores} cores: set trainer.devices to 1..{cores}")


def read_checkpoint_meta(path) -> dict:
    """{'method', 'global_step', 'epoch'} of a Lightning checkpoint, read without loading the weights
    into memory (mmap); UserError naming the file if it is missing or unreadable."""
    import torch

    path = Path(str(path)).expanduser()
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist: pass ckpt_path=<run dir>/checkpoints/last.ckpt "
                        "(or leave ckpt_path unset: resume=auto continues this command's last run)")
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception as err:  # noqa: BLE001 - truncated, not a zip, not a torch file, ...
        raise UserError(f"cannot read checkpoint {path} ({type(err).__name__}: {str(err).splitlines()[0][:120]}): "
                        "it is truncated or not a Lightning checkpoint; use another one") from None
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    cfg = hparams.get("cfg") if isinstance(hparams, dict) else None
    if not isinstance(cfg, dict):
        raise UserError(f"{path} is not a selfsup training checkpoint (no training config inside)")
    return {"method": (cfg.get("method") or {}).get("name"), "global_step": checkpoint.get("global_step"),
            "epoch": checkpoint.get("epoch")}


def check_checkpoint(path, method: str, what: str | None = None, fix: str | None = None) -> dict:
    meta = read_checkpoint_meta(path)
    if meta["method"] != method:
        what = what or f"ckpt_path={path}"
        fix = fix or f"pass method={meta['method']} or a {method} checkpoint"
        raise UserError(f"{what} is a {meta['method']} checkpoint but this run is method={method}: {fix}")
    return meta


def _check_wandb(cfg) -> None:
    import os

    for name, logger in (cfg.get("logger") or {}).items():
        if "wandb" not in str(logger.get("_target_", "")).lower():
            continue
        offline = logger.get("offline")
        env = os.environ.get("WANDB_MODE", "").strip().lower()
        asked = "logger.{}.offline=false".format(name) if offline is False else (
            f"WANDB_MODE={env}" if offline is None and env in ("online", "run") else None)
        if asked is None:
            continue
        from selfsup.tracking import api_key_configured

        if not api_key_configured():
            raise UserError(f"W&B online logging was requested ({asked}) but no W&B API key is configured: run "
                            "`wandb login` or set WANDB_API_KEY, or log offline (WANDB_MODE=offline, "
                            "upload later with `wandb sync`)")


def planned_world_size(trainer) -> int:
    """The number of processes Lightning will start for `trainer.*` (devices x nodes), before the
    Trainer exists: "auto" means every visible GPU, or one CPU process."""
    import torch

    accelerator = str(trainer.accelerator)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and gpus > 0)
    wanted = requested_devices(trainer.devices)
    if wanted is None:
        wanted = gpus if on_gpu else 1
    return max(1, wanted) * max(1, trainer.num_nodes or 1)


def check_run(cfg, world: int, datamodule, method_class) -> None:
    """What needs the data (its size, the inferred resolution) or the world size: the pipeline runs
    this before the model is built, with `planned_world_size`, and again with the Trainer's if that
    differs (a cluster environment deciding), before the kNN at init and training."""
    per_rank = len(datamodule.pretrain) // max(1, world)
    if per_rank < cfg.data.batch_size:
        raise UserError(
            f"data.batch_size={cfg.data.batch_size} exceeds the {per_rank} training images per device "
            f"({len(datamodule.pretrain)} images / {world} devices); the training loader drops the last "
            f"incomplete batch, so no batch would remain: lower data.batch_size to at most {per_rank}")
    queue = cfg.method.get("queue_size")
    if isinstance(queue, int):
        keys = cfg.data.batch_size * world * (2 if cfg.method.get("symmetric") else 1)
        if queue % keys:
            views = " x 2 key views (method.symmetric)" if cfg.method.get("symmetric") else ""
            raise UserError(
                f"method.queue_size={queue} is not a multiple of the {keys} keys enqueued per step "
                f"(data.batch_size={cfg.data.batch_size} x {world} devices{views}): set method.queue_size to "
                f"a multiple of {keys}, e.g. {max(keys, queue // keys * keys)}")
    _check_pretext(cfg, cfg.data.resolution)
    check = getattr(method_class, "check_config", None)
    if callable(check):
        check(cfg, world)  # a method's own start-up checks (classmethod, raises UserError)
