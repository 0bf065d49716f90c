"""Checkpoint files: written atomically, written when, and read back.

* `AtomicCheckpointIO` writes every checkpoint to a temporary file in the same directory, fsyncs it
  and renames it over the old one, so a kill mid-save leaves the previous checkpoint intact
  (Lightning's own save truncates the file in place, or goes through /tmp).
* `checkpoint_io` adds a writer thread, so training does not wait for the disk.
* `ResumeCheckpoint` writes <run dir>/checkpoints/last.ckpt every N steps or epochs and at the end of
  training. It holds the weights, the EMA targets and MoCo queue (module buffers), the optimizer, the
  LR scheduler, the loop progress and, through `RunState`, the RNG states.
* `read_checkpoint` is the one reader: train.py (ckpt_path, resume) and eval.py go through it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning_fabric.utilities.cloud_io import get_filesystem
from pytorch_lightning.callbacks import ModelCheckpoint

from selfsup.errors import UserError


def checkpoint_io(background: bool):
    """How a run writes its checkpoints: atomically (`AtomicCheckpointIO`) and, with `background`,
    in a writer thread after copying the tensors (~10 ms for a ResNet-18 and its optimizer), so
    training goes on while ~100 MB are pickled, written and fsynced (~130 ms, once per epoch: 3-10%
    of a CIFAR-size epoch here). Saves run one at a time in order; the run waits for the last one
    before it ends, and a failed write raises at the next save or at the end. Not under SLURM's
    auto-requeue: the requeue checkpoint must be on disk before the job is requeued."""
    from pytorch_lightning.plugins.io import AsyncCheckpointIO

    return AsyncCheckpointIO(AtomicCheckpointIO()) if background else AtomicCheckpointIO()


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
    epoch), and always at the end of training.

    The one adapter over ModelCheckpoint's private methods: ModelCheckpoint writes last.ckpt at
    epoch end only along with a top-k file, and there is none here."""

    def __init__(self, dirpath: str, every_n_steps: Optional[int] = None, every_n_epochs: Optional[int] = 1):
        if every_n_steps:
            triggers = {"every_n_train_steps": every_n_steps, "every_n_epochs": None}
        else:
            triggers = {"every_n_epochs": every_n_epochs or 1}
        super().__init__(
            dirpath=dirpath,
            save_last=True,
            save_top_k=0,
            save_on_train_epoch_end=True,
            enable_version_counter=False,
            **triggers,
        )  # always last.ckpt, never last-v1.ckpt

    @property
    def path(self) -> Path:
        """Where last.ckpt is written: known in every process, whichever process wrote it."""
        return Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        every = self._every_n_epochs
        if every >= 1 and (trainer.current_epoch + 1) % every == 0 and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_end(self, trainer, pl_module) -> None:
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)


@dataclass(frozen=True)
class SavedRun:
    """A selfsup training checkpoint as read by `read_checkpoint`."""

    path: Path
    cfg: dict  # the resolved training config saved with it
    global_step: Optional[int]
    epoch: Optional[int]
    state_dict: dict  # memory-mapped: tensors are read from disk when used

    @property
    def method(self) -> Optional[str]:
        return (self.cfg.get("method") or {}).get("name")


def read_checkpoint(path) -> SavedRun:
    """The checkpoint at `path`, memory-mapped (the weights are not read into memory until used);
    UserError naming the file if it is missing, unreadable or not a selfsup training checkpoint."""
    path = Path(str(path)).expanduser()
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist: pass ckpt_path=<run dir>/checkpoints/last.ckpt")
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception as err:  # noqa: BLE001 - truncated, not a zip, not a torch file, ...
        raise UserError(
            f"cannot read checkpoint {path} ({type(err).__name__}: {str(err).splitlines()[0][:120]}): "
            "it is truncated or not a Lightning checkpoint; use another one"
        ) from None
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    cfg = hparams.get("cfg") if isinstance(hparams, dict) else None
    if not isinstance(cfg, dict):
        raise UserError(f"{path} is not a selfsup training checkpoint (no training config inside)")
    return SavedRun(path, cfg, checkpoint.get("global_step"), checkpoint.get("epoch"), checkpoint.get("state_dict", {}))


def check_checkpoint(path, method: str, what: Optional[str] = None, fix: Optional[str] = None) -> SavedRun:
    """`read_checkpoint`, refusing a checkpoint of another method than `method` (the run's)."""
    saved = read_checkpoint(path)
    if saved.method != method:
        what = what or f"ckpt_path={path}"
        fix = fix or f"pass method={saved.method} or a {method} checkpoint"
        raise UserError(f"{what} is a {saved.method} checkpoint but this run is method={method}: {fix}")
    return saved
