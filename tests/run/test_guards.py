"""What keeps a run safe in-process: the non-finite loss guard's limit on batches skipped in a row, the refusal to
save non-finite weights, atomic checkpoint writes."""

from __future__ import annotations

import os
import pickle

import pytest
import pytorch_lightning as pl
import torch
from conftest import compose_train, cpu_trainer
from hydra.utils import get_class
from torch.utils.data import DataLoader, Dataset

from selfsup.errors import UserError
from selfsup.methods.nonfinite import MAX_CONSECUTIVE_SKIPS, skipped_batches
from selfsup.run.checkpoint import AtomicCheckpointIO
from selfsup.run.state import RunState

BATCH = 4


pytestmark = pytest.mark.usefixtures("one_thread")


class RandomViews(Dataset):
    def __init__(self, length: int):
        generator = torch.Generator().manual_seed(0)
        self.views = torch.randn(length, 2, 3, 16, 16, generator=generator)

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, i):
        return [self.views[i, 0], self.views[i, 1]], 0


def _simclr(tmp_path, *overrides: str):
    cfg = compose_train(
        [
            "method=simclr",
            "data=digits",
            f"data.batch_size={BATCH}",
            "backbone.cifar_stem=false",
            "method.projector.hidden_dim=16",
            "method.projector.output_dim=8",
            *overrides,
        ],
        tmp_path,
    )
    torch.manual_seed(0)
    return get_class(cfg.method._target_)(cfg)


def _fit(model, tmp_path, batches: int, **kwargs) -> pl.Trainer:
    trainer = cpu_trainer(tmp_path, **{"max_epochs": 1, **kwargs})
    trainer.fit(model, train_dataloaders=DataLoader(RandomViews(batches * BATCH), batch_size=BATCH))
    return trainer


def _nan_on(model, nonfinite: list[bool]) -> None:
    """Make the SSL loss of batch i NaN where nonfinite[i]."""
    training_loss, batch = model.training_loss, iter(nonfinite)

    def loss(views):
        out = training_loss(views)
        if next(batch):
            out.loss = out.loss * float("nan")
        return out

    model.training_loss = loss


def test_skip_tolerates_the_limit_in_a_row_and_a_finite_batch_resets_the_count(tmp_path):
    model = _simclr(tmp_path, "on_nonfinite=skip")
    schedule = [True] * MAX_CONSECUTIVE_SKIPS + [False] + [True] * MAX_CONSECUTIVE_SKIPS + [False]
    _nan_on(model, schedule)
    trainer = _fit(model, tmp_path, batches=len(schedule))
    assert skipped_batches(model) == 2 * MAX_CONSECUTIVE_SKIPS and trainer.global_step == len(schedule)


def test_a_skipped_batch_changes_no_weight(tmp_path):
    model = _simclr(tmp_path, "on_nonfinite=skip")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    _nan_on(model, [True, True])
    _fit(model, tmp_path, batches=2)
    assert skipped_batches(model) == 2
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())


def test_skip_stops_one_past_the_limit_in_a_row(tmp_path):
    model = _simclr(tmp_path, "on_nonfinite=skip")
    _nan_on(model, [False] + [True] * (MAX_CONSECUTIVE_SKIPS + 1) + [False])
    with pytest.raises(
        UserError,
        match=rf"non-finite loss at step {MAX_CONSECUTIVE_SKIPS + 1} .*\({MAX_CONSECUTIVE_SKIPS + 1} in a row\)",
    ):
        _fit(model, tmp_path, batches=MAX_CONSECUTIVE_SKIPS + 3)
    assert skipped_batches(model) == MAX_CONSECUTIVE_SKIPS + 1


def test_stop_is_the_default_and_stops_at_the_first_non_finite_loss(tmp_path):
    model = _simclr(tmp_path)
    _nan_on(model, [False, False, True, False])
    with pytest.raises(UserError, match=r"non-finite loss at step 2 .*loss=nan.*on_nonfinite=skip"):
        _fit(model, tmp_path, batches=4)


def test_non_finite_weights_are_never_saved_over_the_last_good_checkpoint(tmp_path):
    model = _simclr(tmp_path)
    trainer = _fit(model, tmp_path, batches=1, callbacks=[RunState()], plugins=[AtomicCheckpointIO()])
    last = tmp_path / "last.ckpt"
    trainer.save_checkpoint(last)
    good = last.read_bytes()
    with torch.no_grad():
        model.backbone.layer4[1].conv2.weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(UserError, match=r"the weights became non-finite \(backbone\.layer4\.1\.conv2\.weight\)"):
        trainer.save_checkpoint(last)
    assert last.read_bytes() == good
    model.backbone.layer4[1].conv2.weight.data.nan_to_num_(posinf=0.0)
    trainer.save_checkpoint(last)  # finite again: saved
    assert last.read_bytes() != good


def test_a_checkpoint_write_that_fails_midway_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    io, path = AtomicCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": 1, "weights": torch.arange(1000.0)}, path)
    previous = path.read_bytes()

    # Serialisation fails after the tensor data is queued: an unpicklable object deep in the checkpoint.
    with pytest.raises((pickle.PicklingError, AttributeError)):  # AttributeError: a local object, py3.11
        io.save_checkpoint({"step": 2, "weights": torch.zeros(1000), "callbacks": {"bad": lambda: None}}, path)
    assert path.read_bytes() == previous and os.listdir(path.parent) == ["last.ckpt"]

    # The write completes but flushing it to disk fails (a full disk, an I/O error) before the rename.
    def fsync_fails(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync_fails)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"step": 3, "weights": torch.ones(1000)}, path)
    assert path.read_bytes() == previous and os.listdir(path.parent) == ["last.ckpt"]
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1
