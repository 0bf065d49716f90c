"""A run survives kills, preemption, NaNs and bad images, losing at most one checkpoint interval.

* `ResumeCheckpoint` writes <run dir>/checkpoints/last.ckpt every N steps or epochs and at the end
  of training; `AtomicCheckpointIO` writes every checkpoint to a temporary file in the same
  directory, fsyncs it and renames it over the old one, so a kill mid-save leaves the previous
  checkpoint intact (Lightning's own save truncates the file in place, or goes through /tmp).
  A checkpoint holds the weights, the EMA targets and MoCo queue (module buffers), the optimizer,
  the LR scheduler, the loop progress and, through `RunState`, the RNG states.
* `guard_loss` (called by `SSLMethod.training_step`): a non-finite loss stops the run naming the
  step and the loss terms, before the weights change and with nothing saved after the fault
  (`on_nonfinite=stop`), or skips the batch (`on_nonfinite=skip`). `RunState` also refuses to save
  non-finite weights over the last good checkpoint.
* `resolve_resume` implements `resume=auto`: the same command run again continues its unfinished
  run (README: "Resuming"); `wandb_run_id` keeps the W&B run id in the run directory so that the
  resumed run logs to the same W&B run; `CsvHistory` keeps csv/metrics.csv whole across resumes.
"""
from __future__ import annotations

import csv
import json
import os
import random
import uuid
from pathlib import Path
from typing import Optional

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning_fabric.utilities.cloud_io import get_filesystem
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_only, rank_zero_warn

from selfsup import distributed
from selfsup.checks import check_checkpoint, resume_enabled
from selfsup.errors import UserError

MAX_CONSECUTIVE_SKIPS = 20  # on_nonfinite=skip: more non-finite losses in a row than this stops the run
WANDB_ID_FILE = "wandb_run_id"
RESUMED_NOTE = "RESUMED.txt"


class NonFiniteError(UserError):
    """A NaN/inf loss or weights: the run stops with one line; exit status 3 (not a config mistake)."""

    exit_code = 3


# --- checkpoints ----------------------------------------------------------------------------------
class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into `.<name>.tmp-<pid>` beside the target, fsync, then os.replace: readers and a
    resumed run see either the old complete checkpoint or the new complete one, never a torn file."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        from fsspec.implementations.local import LocalFileSystem

        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            return super().save_checkpoint(checkpoint, path, storage_options)  # remote: fsspec's transaction
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        try:  # make the rename itself durable
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass


class ResumeCheckpoint(ModelCheckpoint):
    """`<dirpath>/last.ckpt` (conf/callbacks/default.yaml: callbacks.last): every `every_n_steps`
    optimizer steps when set, else every `every_n_epochs` epochs (at the end of the training
    epoch), and always at the end of training."""

    def __init__(self, dirpath: str, every_n_steps: Optional[int] = None, every_n_epochs: Optional[int] = 1):
        if every_n_steps:
            triggers = {"every_n_train_steps": every_n_steps, "every_n_epochs": None}
        else:
            triggers = {"every_n_epochs": every_n_epochs or 1}
        super().__init__(dirpath=dirpath, save_last=True, save_top_k=0, save_on_train_epoch_end=True,
                         enable_version_counter=False, **triggers)  # always last.ckpt, never last-v1.ckpt

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # (ModelCheckpoint writes last.ckpt at epoch end only along with a top-k file; there is none here)
        every = self._every_n_epochs
        if every >= 1 and (trainer.current_epoch + 1) % every == 0 and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_end(self, trainer, pl_module) -> None:
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)


def last_good_checkpoint(trainer) -> str:
    for callback in trainer.checkpoint_callbacks:
        if getattr(callback, "last_model_path", ""):
            step = getattr(callback, "_last_global_step_saved", None)
            return f"{callback.last_model_path} (step {step})" if step else callback.last_model_path
    return "none written yet"


def _collect_rng() -> dict:
    """Plain tensors, lists and numbers only, so that Lightning's weights_only=True load accepts them."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, python_state, python_gauss = random.getstate()
    state = {"torch": torch.get_rng_state(), "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
             "python": [version, list(python_state), python_gauss]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict, rank: int) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, python_state, python_gauss = state["python"]
    random.setstate((version, tuple(python_state), python_gauss))
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except (RuntimeError, IndexError):  # resumed on a different number of GPUs
            pass
    if rank > 0:  # the checkpoint holds rank 0's states: give the other ranks streams of their own
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item()) + rank
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)


class RunState(pl.Callback):
    """Adds the RNG states to every checkpoint (Lightning saves weights, optimizer, scheduler and
    loop progress, not these) and restores them on resume; refuses to write non-finite weights."""

    def __init__(self):
        self._rank = 0

    def setup(self, trainer, pl_module, stage) -> None:
        self._rank = trainer.global_rank

    def state_dict(self) -> dict:
        return {"rng": _collect_rng()}

    def load_state_dict(self, state_dict: dict) -> None:
        if "rng" in state_dict:
            _restore_rng(state_dict["rng"], self._rank)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        for logger in trainer.loggers:  # flush the metrics logged so far: a kill then loses no history
            if isinstance(logger, pl.loggers.CSVLogger):  # before the checkpoint (the CSV buffers 100 steps)
                logger.save()
        for name, value in checkpoint.get("state_dict", {}).items():
            if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
                raise NonFiniteError(
                    f"the weights became non-finite ({name}) by step {trainer.global_step}; nothing was saved over "
                    f"the last good checkpoint, {last_good_checkpoint(trainer)}: lower optimizer.lr or set "
                    "trainer.gradient_clip_val=1.0 and run again")


# --- non-finite losses ----------------------------------------------------------------------------
def guard_loss(module, loss: torch.Tensor, terms: dict) -> Optional[torch.Tensor]:
    """`loss` when it is finite; otherwise stop (on_nonfinite=stop, raises NonFiniteError) or
    return what skips the batch (None; under DDP, where Lightning cannot skip, a zero-gradient
    loss). `terms` are the loss's named parts for the message. Costs one host sync per step."""
    cfg, trainer = module.cfg, module.trainer
    step = trainer.global_step
    if cfg.get("inject_nan_at_step") is not None and step == cfg.inject_nan_at_step:  # test hook
        loss = loss * float("nan")
        terms = {**terms, "loss": terms.get("loss", loss) * float("nan")}
    bad = (~torch.isfinite(loss.detach())).any().to(torch.int32)
    if distributed.is_distributed():  # every rank must take the same branch or DDP hangs
        torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
    skips = module.__dict__.setdefault("_nonfinite_skips", {"total": 0, "in_a_row": 0})
    if not bad.item():
        skips["in_a_row"] = 0
        return loss
    values = ", ".join(f"{name}={_scalar(value)}" for name, value in terms.items())
    where = f"non-finite loss at step {step} (epoch {trainer.current_epoch}): {values}"
    skips["total"] += 1
    skips["in_a_row"] += 1
    if cfg.get("on_nonfinite", "stop") != "skip" or skips["in_a_row"] > MAX_CONSECUTIVE_SKIPS:
        many = f" ({skips['in_a_row']} in a row)" if skips["in_a_row"] > 1 else ""
        raise NonFiniteError(
            f"{where}{many}; stopped before the weights changed, nothing saved after it; the last good checkpoint "
            f"is {last_good_checkpoint(trainer)}: continue from it with ckpt_path=<it> trainer.gradient_clip_val=1.0, "
            "or start afresh with a lower optimizer.lr, or set on_nonfinite=skip to skip such batches")
    rank_zero_warn(f"{where}; skipping this batch (on_nonfinite=skip, {skips['total']} skipped so far)")
    if distributed.is_distributed():
        return sum((p * 0.0).sum() for p in module.parameters() if p.requires_grad)
    return None


def skipped_batches(module) -> int:
    return module.__dict__.get("_nonfinite_skips", {}).get("total", 0)


def _scalar(value) -> str:
    try:
        return f"{float(value.detach() if torch.is_tensor(value) else value):.4g}"
    except (TypeError, ValueError, RuntimeError):
        return str(value)


# --- resume=auto ----------------------------------------------------------------------------------
def resumable_checkpoint(run_dir: Path) -> Optional[Path]:
    """The newest of <run_dir>/checkpoints/last.ckpt and Lightning's SLURM requeue checkpoints."""
    candidates = [run_dir / "checkpoints" / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")]
    existing = [p for p in candidates if p.is_file()]
    return max(existing, key=lambda p: p.stat().st_mtime) if existing else None


def _finished(run_dir: Path) -> bool:
    results = run_dir / "results.json"
    if not results.is_file():
        return False
    try:
        return json.loads(results.read_text()).get("status") != "failed"
    except (OSError, ValueError):
        return False


def _command_config(cfg) -> dict:
    """The composed config as Hydra saved it (interpolations unresolved), minus `resume` and the
    `paths` group (where the code, data and runs live, not what the run does)."""
    config = OmegaConf.to_container(cfg, resolve=False)
    config.pop("resume", None)
    config.pop("paths", None)
    return config


def _command_overrides(overrides) -> list[str]:
    return sorted(o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "resume=")))


def _current_overrides() -> Optional[list[str]]:
    from hydra.core.hydra_config import HydraConfig

    return _command_overrides(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None


def _flat(config, prefix: str = "") -> dict:
    if not isinstance(config, dict):
        return {prefix.rstrip("."): config}
    return {k: v for key, value in config.items() for k, v in _flat(value, f"{prefix}{key}.").items()}


def _same_command_run(run_dir: Path, cfg) -> Optional[tuple[Path, Path]]:
    """The newest sibling run directory made by the same command (equal composed config) that has
    a checkpoint and did not finish. A run of the same command line whose composed config has
    changed since (an edited YAML) is not continued, but named, with the keys that differ."""
    parent = run_dir.parent
    if not parent.is_dir():
        return None
    mine, overrides, found, changed = _command_config(cfg), _current_overrides(), [], []
    for other in parent.iterdir():
        if other == run_dir or not other.is_dir() or _finished(other):
            continue
        checkpoint = resumable_checkpoint(other)
        saved = other / ".hydra" / "config.yaml"
        if checkpoint is None or not saved.is_file():
            continue
        try:
            theirs = _command_config(OmegaConf.load(saved))
        except Exception:  # noqa: BLE001 - an unreadable or foreign config is simply not a match
            continue
        if theirs == mine:
            found.append((checkpoint.stat().st_mtime, other, checkpoint))
        elif overrides is not None and (other / ".hydra" / "overrides.yaml").is_file():
            try:
                same_line = _command_overrides(OmegaConf.load(other / ".hydra" / "overrides.yaml")) == overrides
            except Exception:  # noqa: BLE001
                same_line = False
            if same_line:
                a, b = _flat(mine), _flat(theirs)
                changed.append((checkpoint.stat().st_mtime, other, checkpoint,
                                sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))))
    if found:
        return max(found)[1:]
    if changed:
        _, other, checkpoint, keys = max(changed)
        print(f"not resuming {other}: made by this command line, but its config has changed since "
              f"({', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''}); starting afresh "
              f"(ckpt_path={checkpoint} continues it with the new config)", flush=True)
    return None


def resolve_resume(cfg) -> Optional[dict]:
    """resume=auto: where this run continues from, or None for a fresh start.

    1. The run directory itself has a checkpoint (the user fixed it with hydra.run.dir=..., or a
       DDP rank re-launched into it): continue from it.
    2. Else the newest unfinished run directory beside it (outputs/train/runs/*) whose composed
       config equals this one, i.e. made by the same command, with a checkpoint: continue from it
       and write into it (cfg.paths.output_dir is switched there, so checkpoints, CSV, W&B id and
       results.json stay in one place); this attempt's own directory only keeps a note.
    A finished run (results.json) is not continued: the same command again then starts afresh.
    Must run before anything resolves or edits cfg. Returns {'run_dir', 'checkpoint', 'global_step'}.
    """
    if not resume_enabled(cfg.get("resume", "auto")):
        return None
    run_dir = Path(cfg.paths.output_dir)
    checkpoint, source = resumable_checkpoint(run_dir), run_dir
    if checkpoint is None:
        match = _same_command_run(run_dir, cfg)
        if match is None:
            return None
        source, checkpoint = match
    meta = check_checkpoint(checkpoint, cfg.method.name, what=f"{checkpoint} (which resume=auto would continue)",
                            fix="use another run directory (hydra.run.dir) or resume=never")
    if source != run_dir:
        cfg.paths.output_dir = str(source)
    if rank_zero_only.rank != 0:  # (every rank of a DDP / SLURM job resolves the same run)
        return {"run_dir": str(source), "checkpoint": str(checkpoint), "global_step": meta["global_step"]}
    if source != run_dir:
        try:
            (run_dir / RESUMED_NOTE).write_text(f"this command resumed {source} from {checkpoint}; its outputs are there\n")
        except OSError:
            pass
    print(f"resuming {source} from {checkpoint.name} (global step {meta['global_step']}); resume=never starts afresh",
          flush=True)
    return {"run_dir": str(source), "checkpoint": str(checkpoint), "global_step": meta["global_step"]}


def wandb_run_id(run_dir: str) -> str:
    """The W&B run id of this run directory, created once: a resumed run logs to the same W&B run."""
    path = Path(run_dir) / WANDB_ID_FILE
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:12]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n")
    return run_id


def logger_kwargs(logger_cfg, run_dir: str) -> dict:
    """Extra arguments for a logger config: the stable W&B id (resume='allow' is WandbLogger's default)."""
    if "wandb" in str(logger_cfg.get("_target_", "")).lower() and not logger_cfg.get("id"):
        if rank_zero_only.rank == 0:  # only rank 0 logs to W&B (and creates the id file)
            return {"id": wandb_run_id(run_dir)}
    return {}


class CsvHistory:
    """Lightning's CSVLogger deletes an existing metrics.csv when it starts; on resume, keep the rows
    logged before the checkpoint aside and put them back in front of the new ones after fit."""

    STASH = "metrics.before_resume.csv"

    def __init__(self, loggers, resumed_step: Optional[int]):
        self.files = []
        if resumed_step is None or rank_zero_only.rank != 0:  # only rank 0 writes the CSV
            return
        for logger in loggers:
            if isinstance(logger, pl.loggers.CSVLogger):
                metrics = Path(logger.log_dir) / "metrics.csv"
                stash = metrics.with_name(self.STASH)
                rows = _read_rows(stash) + _read_rows(metrics)
                _write_rows(stash, [r for r in rows if _step(r) < resumed_step])
                if metrics.exists():
                    metrics.unlink()
                self.files.append((metrics, stash))

    def merge(self) -> None:
        for metrics, stash in self.files:
            if stash.exists():
                _write_rows(metrics, _read_rows(stash) + _read_rows(metrics))
                stash.unlink()


def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_rows(path: Path, rows: list[dict]) -> None:
    fields = list(dict.fromkeys(key for row in rows for key in row))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _step(row: dict) -> float:
    try:
        return float(row.get("step") or 0)
    except ValueError:
        return 0.0


def report_skipped_images(paths: list[str], listing: Path) -> None:
    if paths:
        shown = ", ".join(paths[:5]) + (f", ... ({len(paths) - 5} more)" if len(paths) > 5 else "")
        print(f"skipped {len(paths)} unreadable images: {shown} (data.skip_corrupt=true; all listed in {listing})",
              flush=True)
