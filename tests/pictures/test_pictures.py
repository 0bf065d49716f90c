"""What a run shows: the final score line, one progress line per epoch off a terminal, the pictures in <run
dir>/images/, TensorBoard as a logger."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import CIFAR_SUBSET, TINY_RUN, compose_train, run_script
from hydra.errors import ConfigCompositionException
from PIL import Image

PICTURES = ("views", "neighbours", "embedding", "curves")


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory):
    """A tiny run on the CIFAR-10 sample, stdout a pipe (not a terminal), logged to CSV and TensorBoard."""
    if not (CIFAR_SUBSET / "train").is_dir():
        pytest.skip(f"real-image data not found at {CIFAR_SUBSET}")
    run_dir = tmp_path_factory.mktemp("cifar_run")
    proc = run_script(
        "train.py",
        [
            "data=folder",
            f"data.root={CIFAR_SUBSET}",
            *TINY_RUN,
            "trainer.enable_progress_bar=true",
            "trainer.log_every_n_steps=1",
            "logger=[csv,tensorboard]",
        ],
        run_dir,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return SimpleNamespace(dir=run_dir, stdout=proc.stdout, results=json.loads((run_dir / "results.json").read_text()))


# --- say the result ------------------------------------------------------------------------------
def test_run_ends_with_its_score_and_prints_one_line_per_epoch_off_a_terminal(cifar_run):
    lines = cifar_run.stdout.splitlines()
    assert lines[-1] == f"results: {cifar_run.dir / 'results.json'}"
    assert lines[-2] == f"final: kNN top-1 {cifar_run.results['knn_top1']:.4f}"
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert len(epoch_lines) == 1, lines
    assert re.fullmatch(r"epoch 1/1  step 2  loss \d+\.\d{4}  kNN \d\.\d{4}  images/s \d+  ETA 0:00:00", epoch_lines[0])


def test_score_line_gives_the_change_since_init():
    from selfsup.report.markdown import score_line

    line = score_line({"knn_top1": 0.45, "knn_top1_at_init": 0.40, "linear_top1": 0.5})
    assert line == "final: kNN top-1 0.4500 (+0.0500 from init 0.4000), linear top-1 0.5000"
    assert score_line({"status": "failed"}) is None


# --- pictures ------------------------------------------------------------------------------------
def test_run_writes_and_names_its_pictures(cifar_run):
    for name in PICTURES:
        path = cifar_run.dir / "images" / f"{name}.png"
        assert f"image: {path}" in cifar_run.stdout
        width, height = Image.open(path).size
        assert width > 300 and height > 100, (name, width, height)
    # views.png: one row per view (SimCLR: 2) of 8 images; neighbours.png: 8 queries x (1 + 8) cells
    views = Image.open(cifar_run.dir / "images" / "views.png").size
    neighbours = Image.open(cifar_run.dir / "images" / "neighbours.png").size
    assert views[0] > 3 * views[1] and neighbours[1] > 0.8 * neighbours[0]


def test_images_false_writes_no_pictures_and_the_key_is_schema_checked(tmp_path):
    from selfsup.pictures.publish import ViewsPicture
    from selfsup.run.launch import build_trainer

    with pytest.raises(ConfigCompositionException):
        compose_train(["images=maybe"], tmp_path)
    for images in (True, False):
        cfg = compose_train(["data=digits", *TINY_RUN, f"images={images}"], tmp_path)
        cfg.data.num_classes, cfg.data.resolution = 10, 16
        trainer = build_trainer(cfg)
        assert any(isinstance(c, ViewsPicture) for c in trainer.callbacks) == images


def test_neighbours_are_the_nearest_by_cosine_and_queries_span_the_classes():
    from selfsup.pictures.grids import nearest_neighbours, query_indices

    val_y = torch.tensor([3, 3, 0, 1, 2, 2, 1, 0])
    assert query_indices(val_y, count=4) == [2, 3, 4, 0]  # the first image of each class
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    val = torch.tensor([[2.0, 0.1], [0.1, 3.0]])
    assert nearest_neighbours(bank, val, [0, 1], k=3).tolist() == [[0, 2, 1], [1, 2, 0]]


def test_views_picture_draws_the_batch_it_is_given_denormalised(tmp_path):
    """The callback draws the batch Lightning hands to on_train_batch_start, i.e. after the transfer
    hooks (device augmentation); the de-normalisation must give back the pixels."""
    from selfsup.pictures.grids import CELL_SIDE
    from selfsup.pictures.publish import ViewsPicture

    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    colour = torch.tensor([0.2, 0.6, 0.9])
    image = colour.view(1, 3, 1, 1).expand(2, 3, 16, 16)
    normalised = (image - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    callback = ViewsPicture(str(tmp_path), mean, std)
    trainer = SimpleNamespace(is_global_zero=True, loggers=[], global_step=0)
    callback.on_train_batch_start(trainer, None, ([normalised, normalised], torch.zeros(2)), 0)
    pixels = torch.from_numpy(np.asarray(Image.open(tmp_path / "images" / "views.png").convert("RGB"))).float()
    matching = ((pixels - 255 * colour).abs() <= 3).all(dim=-1)
    assert matching.sum() > 0.8 * 4 * CELL_SIDE**2  # 2 views x 2 images, each a CELL_SIDE square of that colour


def test_embedding_and_curves_draw_from_their_inputs(tmp_path):
    from selfsup.pictures.curves import read_metrics, save_curves
    from selfsup.pictures.embedding import embed_2d, save_embedding

    features = torch.cat([torch.randn(60, 32) + 6 * torch.eye(32)[c] for c in range(3)])
    points = torch.from_numpy(embed_2d(features))
    centres = torch.stack([points[i * 60 : (i + 1) * 60].mean(0) for i in range(3)])
    spread = max(points[i * 60 : (i + 1) * 60].std(0).norm() for i in range(3))
    assert torch.cdist(centres, centres).fill_diagonal_(float("inf")).min() > 2 * spread  # classes apart
    save_embedding(features, torch.arange(3).repeat_interleave(60), ["a", "b", "c"], tmp_path / "embedding.png")
    metrics = tmp_path / "metrics.csv"
    metrics.write_text("epoch,step,train/loss,train/lr,val/knn_top1\n0,0,5.0,0.1,\n0,1,4.0,0.2,\n0,1,,,0.3\n")
    assert read_metrics(metrics) == {
        "train/loss": [(0, 5.0), (1, 4.0)],
        "train/lr": [(0, 0.1), (1, 0.2)],
        "val/knn_top1": [(1, 0.3)],
    }
    save_curves(metrics, tmp_path / "curves.png", knn_at_init=0.1, final_knn=0.35)
    assert (tmp_path / "embedding.png").stat().st_size > 10_000 and (tmp_path / "curves.png").stat().st_size > 10_000


# --- TensorBoard ---------------------------------------------------------------------------------
def test_tensorboard_logger_writes_an_events_file(cifar_run):
    events = list((cifar_run.dir / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and b"train/loss" in events[0].read_bytes()
