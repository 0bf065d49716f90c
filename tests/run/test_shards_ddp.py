"""data=shards under DDP through train.py (issue 29): on 2 CPU ranks (strategy=ddp_spawn) each rank trains on
its own share of the stream, and the two shares are the whole epoch. The shards are scripts/make_shards.py's
of a class folder with one image per class, so a batch's labels name the images it holds; each rank records
them (run.shard_ids.RecordBatchLabels, one file per rank).

Needs 2 cores: with fewer, train.py refuses trainer.devices=2 on CPU in one line and this test fails on it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from conftest import REPO, assert_succeeded, run_script
from PIL import Image
from run.shard_ids import make_shards, read_record

IMAGES, BATCH, RANKS = 40, 4, 2
STEPS = IMAGES // (BATCH * RANKS)  # 5: drop_last leaves no image out


def _one_image_per_class(root: Path) -> Path:
    """IMAGES classes of one train and one val image each: class i's label is its train image's id."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for i in range(IMAGES):
            (root / split / f"{i:02d}").mkdir(parents=True)
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / split / f"{i:02d}" / "0.png")
    return root


def test_two_cpu_ranks_train_on_disjoint_shares_that_cover_the_epoch(tmp_path, capsys):
    shards = tmp_path / "shards"
    make_shards(["data=folder", f"data.root={_one_image_per_class(tmp_path / 'folder')}", f"out={shards}"])
    assert f"train {IMAGES}, val {IMAGES} images, {IMAGES} classes" in capsys.readouterr().out
    record, run_dir = tmp_path / "ids.txt", tmp_path / "run"
    proc = run_script(
        "train.py",
        [
            "data=shards",
            f"data.root={shards}",
            f"data.batch_size={BATCH}",
            "data.resolution=16",
            "data.num_workers=0",
            "trainer.accelerator=cpu",
            f"trainer.devices={RANKS}",
            "strategy=ddp_spawn",
            "trainer.max_epochs=1",
            "++trainer.limit_val_batches=0",
            "eval.linear=null",
            "eval.knn_at_init=false",
            "images=false",
            "trainer.enable_progress_bar=false",
            "backbone.cifar_stem=false",
            "trainer.precision=32-true",
            "method.projector.hidden_dim=32",
            "method.projector.output_dim=16",
            "+callbacks.record._target_=run.shard_ids.RecordBatchLabels",
            f"+callbacks.record.path={record}",
        ],
        run_dir,
        env={"PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])},
    )
    assert_succeeded(proc, "train.py data=shards on 2 CPU ranks")
    results = json.loads((run_dir / "results.json").read_text())
    assert results["global_batch_size"] == RANKS * BATCH and results["steps"] == STEPS

    assert not record.exists()  # every rank wrote its own file
    shares = []
    for rank in range(RANKS):
        steps = read_record(f"{record}.rank{rank}")
        assert [step for step, _ in steps] == list(range(STEPS)) and all(len(ids) == BATCH for _, ids in steps)
        ids = [i for _, labels in steps for i in labels]
        assert len(set(ids)) == len(ids) == IMAGES // RANKS, f"rank {rank} saw an image twice: {ids}"
        shares.append(set(ids))
    assert not shares[0] & shares[1], f"both ranks trained on {sorted(shares[0] & shares[1])}"
    assert shares[0] | shares[1] == set(range(IMAGES))  # together: every image of the epoch once
