"""SwAV and NNCLR as methods: recipes, the prototypes frozen for the first epoch, the SwAV queue filling and
joining, both queues saved and resumed exactly, 2 ranks against 1 process on the global batch (losses and
queues), user mistakes in one line, tiny train.py runs to results.json."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from conftest import TINY_RUN, compose_train, cpu_trainer, train
from distributed_harness import run_on_ranks
from hydra.utils import get_class
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from selfsup import distributed
from selfsup.data.transforms import view_resolution
from selfsup.errors import UserError

BATCH = 8
TINY_HEADS = {
    "swav": ["method.projector.hidden_dim=32", "method.projector.output_dim=16", "method.num_prototypes=20"],
    "nnclr": [
        "method.projector.hidden_dim=32",
        "method.projector.output_dim=16",
        "method.predictor.hidden_dim=32",
        "method.predictor.output_dim=16",
        "method.queue_size=32",
    ],
}

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(method: str, tmp_path, *overrides: str):
    return compose_train(
        [
            f"method={method}",
            "data=digits",
            "data.resolution=32",
            f"data.batch_size={BATCH}",
            "backbone.cifar_stem=false",
            *TINY_HEADS[method],
            *overrides,
        ],
        tmp_path,
    )


def _model(cfg):
    torch.manual_seed(0)
    return get_class(cfg.method._target_)(cfg)


def _loader(cfg, batches: int) -> DataLoader:
    """Fixed random views at the sizes the augmentation gives them, in a fixed order."""
    generator = torch.Generator().manual_seed(0)
    sizes = [view_resolution(view, cfg.augmentation) for view in cfg.augmentation.views]
    views = [torch.randn(batches * BATCH, 3, s, s, generator=generator) for s in sizes]
    labels = torch.randint(0, 10, (batches * BATCH,), generator=generator)
    return DataLoader(TensorDataset(*views, labels), batch_size=BATCH, collate_fn=_views_and_labels)


def _views_and_labels(items):
    *views, labels = (torch.stack(column) for column in zip(*items))
    return views, labels


def _trainer(tmp_path, callbacks=(), **kwargs) -> pl.Trainer:
    return cpu_trainer(tmp_path, callbacks=list(callbacks), log_every_n_steps=1, **kwargs)


class _Record(Callback):
    def __init__(self):
        self.queue_in_use, self.prototypes = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.queue_in_use.append(trainer.callback_metrics["train/swav_queue_in_use"].item())

    def on_train_epoch_end(self, trainer, pl_module):
        self.prototypes.append([p.detach().clone() for p in pl_module.prototypes.parameters()])


# ------------------------------------------------------------------------------- SwAV


def test_swav_prototypes_frozen_for_the_first_epoch_and_the_queue_joins_once_full(tmp_path):
    """2 steps an epoch; the queue (16 rows = 2 steps) fills from epoch 1 and joins the codes at the step
    after it is full; the prototypes keep their initial values through epoch 0 and move in epoch 1."""
    cfg = _config(
        "swav",
        tmp_path,
        "method.queue_length=16",
        "method.queue_start_epoch=1",
        "method.freeze_prototypes_epochs=1",
        "augmentation=simclr",
    )
    model = _model(cfg)
    before = [p.detach().clone() for p in model.prototypes.parameters()]
    projector_before = [p.detach().clone() for p in model.projector.parameters()]
    record = _Record()
    _trainer(tmp_path, [record], max_epochs=3).fit(model, train_dataloaders=_loader(cfg, 2))
    assert record.queue_in_use == [0, 0, 0, 0, 1, 1]
    assert int(model.queued_rows) == 4 * BATCH and all(int(q.ptr) == 0 for q in model.queues)
    assert all(torch.equal(a, b) for a, b in zip(before, record.prototypes[0]))
    assert any(not torch.equal(a, b) for a, b in zip(before, record.prototypes[1]))
    assert any(not torch.equal(a, b) for a, b in zip(projector_before, model.projector.parameters()))
    norm = model.prototypes.parametrizations.weight.original0
    assert not norm.requires_grad and torch.equal(norm, torch.ones_like(norm))  # unit prototypes


def test_swav_queue_holds_the_last_global_view_projections(tmp_path):
    cfg = _config("swav", tmp_path, "method.queue_length=16", "method.queue_start_epoch=0")
    model = _model(cfg).eval()  # running BatchNorm statistics: each projection depends on its image alone
    views, _ = next(iter(_loader(cfg, 1)))
    model.training_loss(views)
    model.training_loss(views)
    with torch.no_grad():
        projections = [torch.nn.functional.normalize(model.projector(model.backbone(v)), dim=1) for v in views[:2]]
    for queue, z in zip(model.queues, projections):  # 2 global views, one queue each
        torch.testing.assert_close(queue.queue, torch.cat([z, z]), rtol=1e-5, atol=1e-6)


def test_swav_paper_defaults_and_multi_crop():
    cfg = compose_train(["method=swav", "data.resolution=224"])
    method, loss = cfg.method, cfg.loss
    assert (method.num_prototypes, method.projector.output_dim, method.freeze_prototypes_epochs) == (3000, 128, 1)
    assert (loss.temperature, loss.epsilon, loss.sinkhorn_iterations) == (0.1, 0.05, 3)
    views = cfg.augmentation.views
    assert [view_resolution(v, cfg.augmentation) for v in views] == [224] * 2 + [96] * 6
    assert list(views[0].crop_scale) == [0.14, 1.0] and list(views[2].crop_scale) == [0.05, 0.14]


# ------------------------------------------------------------------------------- both


@pytest.mark.parametrize(
    "method, overrides",
    [
        ("swav", ["method.queue_length=16", "method.queue_start_epoch=1", "augmentation=simclr"]),
        ("nnclr", []),
    ],
)
def test_queue_state_is_saved_and_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(
    method, overrides, tmp_path
):
    """2 epochs, checkpoint, 1 more epoch == 3 epochs straight: every weight and every queue buffer equal
    (a constant LR, so the schedule does not depend on where a run is cut)."""
    cfg = _config(method, tmp_path, "scheduler=constant", *overrides)
    straight = _model(cfg)
    _trainer(tmp_path / "straight", max_epochs=3).fit(straight, train_dataloaders=_loader(cfg, 2))

    first = _model(cfg)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True)
    _trainer(tmp_path / "first", [checkpoint], max_epochs=2, enable_checkpointing=True).fit(
        first, train_dataloaders=_loader(cfg, 2)
    )
    saved = torch.load(checkpoint.last_model_path, map_location="cpu", weights_only=False)["state_dict"]
    queue_keys = [k for k in saved if k.startswith(("queues.", "support.")) or k == "queued_rows"]
    assert queue_keys and all(torch.equal(saved[k], first.state_dict()[k]) for k in queue_keys)

    resumed = _model(cfg)
    _trainer(tmp_path / "resumed", max_epochs=3).fit(
        resumed, train_dataloaders=_loader(cfg, 2), ckpt_path=checkpoint.last_model_path
    )
    end, want = resumed.state_dict(), straight.state_dict()
    assert all(torch.equal(end[k], want[k]) for k in want), [k for k in want if not torch.equal(end[k], want[k])]
    assert not all(torch.equal(saved[k], want[k]) for k in queue_keys)  # the third epoch moved the queues


def _steps_on_rank(rank, world_size, cfg, batches):
    model = _model(cfg).eval()  # running BatchNorm statistics: a sample's output does not depend on its batch
    losses = []
    for views in batches:
        local = [v[rank * BATCH : (rank + 1) * BATCH] for v in views]
        loss = model.training_loss(local).loss.detach()
        losses.append(distributed.all_reduce(loss) / world_size)
    return torch.stack(losses), {k: v for k, v in model.state_dict().items() if k.startswith(("queues.", "support."))}


@pytest.mark.parametrize(
    "method, overrides",
    [
        ("swav", ["method.queue_length=32", "method.queue_start_epoch=0"]),
        ("nnclr", []),
    ],
)
def test_two_ranks_give_one_process_losses_and_queues_on_the_global_batch(method, overrides, tmp_path):
    """3 steps of B=8 per rank on 2 ranks against 3 steps of 16 on one process: SwAV's queue (2 global
    batches) fills and joins at the third step, NNCLR's support set takes the gathered view-1 projections."""
    cfg = OmegaConf.create(OmegaConf.to_container(_config(method, tmp_path, *overrides), resolve=True))  # for the ranks
    generator = torch.Generator().manual_seed(1)
    sizes = [view_resolution(view, cfg.augmentation) for view in cfg.augmentation.views]
    batches = [[torch.randn(2 * BATCH, 3, s, s, generator=generator) for s in sizes] for _ in range(3)]

    reference = _model(cfg).eval()
    want = torch.stack([reference.training_loss(views).loss.detach() for views in batches])
    for losses, queues in run_on_ranks(_steps_on_rank, cfg, batches):
        torch.testing.assert_close(losses, want, rtol=1e-4, atol=1e-5)
        for name, buffer in queues.items():
            torch.testing.assert_close(buffer, reference.state_dict()[name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "method, overrides, message",
    [
        ("swav", ["augmentation=rotation"], "SwAV needs at least 2 views"),
        (
            "swav",
            ["method.queue_length=20"],
            r"queue size K=20 is not divisible .* \(method.queue_length=20, data.batch_size=8 x 2 devices\)",
        ),
        ("swav", ["method.queue_start_epoch=-1"], "method.queue_start_epoch must be >= 0"),
        ("nnclr", ["method.queue_size=40"], r"\(method.queue_size=40, data.batch_size=8 x 2 devices\)"),
        ("nnclr", ["method.queue_size=0"], "method.queue_size must be > 0"),
    ],
)
def test_mistakes_fail_in_one_line_before_training(method, overrides, message, tmp_path):
    cfg = _config(method, tmp_path, *overrides)
    with pytest.raises(UserError, match=message):
        get_class(cfg.method._target_).check_config(cfg, world_size=2)


@pytest.mark.parametrize(
    "experiment, global_batch, optimizer, lr, epochs, target",
    [
        ("swav_imagenet", 4096, "lars", 0.3, 800, "target_linear_75.3"),
        ("swav_cifar10", 256, "lars", 0.6, 1000, "target_linear_89.17"),
        ("nnclr_imagenet", 4096, "lars", 0.3, 1000, "target_linear_75.4"),
        ("nnclr_cifar10", 256, "lars", 0.4, 1000, "target_linear_91.88"),
        ("swav_cpu_short", 128, "adamw", 2.0e-3, 40, None),
        ("nnclr_cpu_short", 128, "adamw", 2.0e-3, 16, None),
    ],
)
def test_recipes_compose_and_pass_their_own_checks(experiment, global_batch, optimizer, lr, epochs, target, tmp_path):
    cfg = compose_train([f"experiment={experiment}", f"data.root={tmp_path}"])
    trainer = cfg.trainer
    devices = trainer.devices if isinstance(trainer.devices, int) else 1
    assert cfg.data.batch_size * devices * trainer.num_nodes == global_batch
    assert (cfg.optimizer.name, cfg.optimizer.lr, trainer.max_epochs) == (optimizer, lr, epochs)
    assert target is None or target in cfg.tags
    if cfg.data.resolution is None:
        cfg.data.resolution = 32
    get_class(cfg.method._target_).check_config(cfg, devices * trainer.num_nodes)  # queues fit the batch


@pytest.mark.parametrize(
    "method, overrides",
    [
        ("swav", ["method.queue_length=32", "method.queue_start_epoch=0"]),  # multi-crop, 2 global + 6 local views
        ("nnclr", []),
    ],
)
def test_tiny_run_writes_results_with_the_queue_in_the_checkpoint(method, overrides, tmp_path):
    results = train([f"method={method}", *TINY_RUN, *TINY_HEADS[method], *overrides], tmp_path)
    assert results["method"] == method and results["steps"] == 2
    state = torch.load(results["checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    queues = [k for k in state if k.endswith(".ptr")]
    assert queues and all(int(state[k]) == 2 * 16 % int(state[k.replace(".ptr", ".queue")].shape[0]) for k in queues)
