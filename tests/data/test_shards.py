"""data=shards (selfsup/data/shards.py, scripts/make_shards.py): what the shards hold, re-runs, damaged
directories, and each DDP rank's share of the stream."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, make_image_tree, run_script
from PIL import Image
from run.shard_ids import make_shards, write_id_shards
from torchvision.datasets import ImageFolder
from torchvision.transforms import PILToTensor

from selfsup.checks.data import check_data_root
from selfsup.config import compose_train
from selfsup.data.datasets import NO_LABEL, DigitsDataset, ImageFiles
from selfsup.data.shards import ShardImages, shard_datasets
from selfsup.errors import UserError

CLASSES = ("cat", "dog", "owl")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """3 classes x (5 train + 2 val) JPEGs of different sizes: files whose bytes a re-encode would change."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for split, count in (("train", 5), ("val", 2)):
        for name in CLASSES:
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (24 + i, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.jpg", quality=70)
    return root


def _sample(shards: Path, split: str, index: int) -> dict:
    from litdata import StreamingDataset

    return StreamingDataset(str(shards / split))[index]


def test_folder_shards_hold_the_files_bytes_and_labels_and_read_like_the_folder(folder, tmp_path, capsys):
    shards = tmp_path / "shards"
    make_shards(["data=folder", f"data.root={folder}", f"out={shards}"])
    out = capsys.readouterr().out
    size = sum(f.stat().st_size for f in shards.rglob("*") if f.is_file())
    assert f"wrote {shards}: train 15, val 6 images, 3 classes, {size:,} bytes" in out
    cfg = compose_train(["data=shards", f"data.root={shards}"]).data
    check_data_root(cfg)
    pretrain, labelled, val = shard_datasets(cfg)
    assert labelled is pretrain and pretrain.classes == list(CLASSES)
    for split, shard in (("train", pretrain), ("val", val)):
        reference = ImageFolder(str(folder / split))
        files = {Path(path).read_bytes(): (j, label) for j, (path, label) in enumerate(reference.samples)}
        stored = [_sample(shards, split, i) for i in range(len(shard))]
        source = [files[sample["image"]] for sample in stored]  # each stored image is a file's bytes: not re-encoded
        assert sorted(j for j, _ in source) == list(range(len(reference)))  # every file once
        assert [sample["label"] for sample in stored] == [label for _, label in source] == shard.targets
        assert [j for j, _ in source] != list(range(len(reference)))  # written shuffled, not class-sorted
        image, label = shard[4]
        assert label == source[4][1]
        assert np.array_equal(np.asarray(image), np.asarray(reference[source[4][0]][0]))


def test_decoded_sources_are_stored_losslessly_and_a_rerun_keeps_complete_shards(tmp_path, capsys):
    shards = tmp_path / "digits"
    shards.with_name("digits.partial").mkdir()  # what an interrupted run leaves: removed, not mixed in
    (shards.with_name("digits.partial") / "stale").write_text("x")
    make_shards(["data=digits", f"out={shards}", "limit=40"])
    assert "train 40, val 40 images, 10 classes" in capsys.readouterr().out
    assert not shards.with_name("digits.partial").exists() and not (shards / "stale").exists()
    pretrain, _, _ = shard_datasets(compose_train(["data=shards", f"data.root={shards}"]).data)
    digits = DigitsDataset(train=True)
    spread = [i * len(digits) // 40 for i in range(40)]  # limit=N: evenly spaced, every class
    pixels = {np.asarray(digits[i][0]).tobytes(): i for i in spread}  # the decoded images, losslessly stored
    source = [pixels[np.asarray(pretrain[i][0]).tobytes()] for i in range(len(pretrain))]
    assert sorted(source) == spread and source != spread  # every chosen image once, in a shuffled order
    assert pretrain.targets == [digits.targets[i] for i in source] and len(set(pretrain.targets)) == 10

    index = shards / "train" / "index.json"
    written = index.stat().st_mtime_ns
    make_shards(["data=digits", f"out={shards}", "limit=40"])
    assert "already holds shards" in capsys.readouterr().out and index.stat().st_mtime_ns == written
    make_shards(["data=digits", f"out={shards}", "limit=20", "overwrite=true"])
    assert "train 20, val 20 images" in capsys.readouterr().out


def test_an_unlabelled_tree_becomes_train_shards_without_labels(tmp_path, capsys):
    tree, shards = make_image_tree(tmp_path / "tree"), tmp_path / "shards"
    make_shards(["data=images", f"data.root={tree}", f"out={shards}"])
    files = ImageFiles(str(tree)).samples
    assert f"wrote {shards}: train {len(files)} images, 0 classes" in capsys.readouterr().out
    pretrain, labelled, val = shard_datasets(compose_train(["data=shards", f"data.root={shards}"]).data)
    assert labelled is None and val is None and pretrain.targets == [NO_LABEL] * len(files)  # as data=images
    stored = [bytes(_sample(shards, "train", i)["image"]) for i in range(len(files))]
    assert sorted(stored) == sorted(Path(p).read_bytes() for p, _ in files)  # every file's bytes once


def test_missing_empty_or_damaged_shard_directories_are_named(tmp_path):
    def error(root) -> str:
        cfg = compose_train(["data=shards", f"data.root={root}"]).data
        with pytest.raises(UserError) as err:
            check_data_root(cfg)
            shard_datasets(cfg)
        return str(err.value)

    assert "does not exist" in error(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    assert "has no shards.json" in error(tmp_path / "empty")
    shards = write_id_shards(tmp_path / "shards", 20, 8, side=8)
    chunk = next((shards / "train").glob("chunk-*.bin"))
    chunk.write_bytes(chunk.read_bytes()[:-10])
    assert f"shard {chunk} has {chunk.stat().st_size} bytes, the index says" in error(shards)
    chunk.unlink()
    assert f"shard {chunk} is missing" in error(shards)
    shards = write_id_shards(tmp_path / "no_val_index", 20, 8, side=8)
    (shards / "val" / "index.json").unlink()
    assert f"shard split {shards / 'val'} has no readable index.json" in error(shards)


def test_train_py_names_a_damaged_shard_in_one_line_before_training(tmp_path):
    shards = write_id_shards(tmp_path / "shards", 20, 8, side=8)
    chunk = next((shards / "val").glob("chunk-*.bin"))
    chunk.write_bytes(chunk.read_bytes()[:100])
    proc = run_script("train.py", ["data=shards", f"data.root={shards}"], tmp_path / "run")
    assert_one_line_error(proc, f"shard {chunk} has 100 bytes", "damaged", only_line=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def _rank_share(rank: int, world: int, shards: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ["SHARD_TEST_PORT"])
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    meta = json.loads((Path(shards) / "shards.json").read_text())
    images = ShardImages(str(Path(shards) / "train"), meta["classes"], meta["labels"]["train"])
    loader = images.stream_loader(PILToTensor(), batch_size=4, num_workers=2, seed=5, pin_memory=False)
    ids = [int(i) for _, labels in loader for i in labels]
    Path(out, f"rank{rank}.json").write_text(json.dumps({"ids": ids, "batches": len(loader)}))
    torch.distributed.destroy_process_group()


def test_each_of_two_ranks_streams_a_disjoint_share(tmp_path):
    shards = write_id_shards(tmp_path / "shards", 50, 8, side=8)
    os.environ["SHARD_TEST_PORT"] = str(29500 + os.getpid() % 1000)
    # fork: the ranks start with this process's imports (spawned ranks would re-import them, and fork their workers)
    torch.multiprocessing.start_processes(
        _rank_share, args=(2, str(shards), str(tmp_path)), nprocs=2, start_method="fork"
    )
    shares = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    first, second = (set(share["ids"]) for share in shares)
    assert len(shares[0]["ids"]) == len(first) == len(shares[1]["ids"]) == shares[0]["batches"] * 4 == 24
    assert not first & second  # drop_last: 48 of the 50 images, each on one rank
    assert len(first | second) == 48
