"""The order in which data=shards streams a class-sorted source: every batch mixes the classes. Written in
the source's order and read with LitData's default block shuffle, each batch of the CIFAR sample held one
class (the SimCLR kNN after 4 epochs fell from 0.376 to 0.360 and 0.374 to 0.344, seeds 0 and 1)."""

from __future__ import annotations

import numpy as np
from PIL import Image
from run.shard_ids import make_shards, write_id_shards
from torchvision.transforms import PILToTensor

from selfsup.config import compose_train
from selfsup.data.shards import ShardImages, shard_datasets


def epoch_labels(shards: ShardImages, batch_size: int, num_workers: int) -> list[list[int]]:
    loader = shards.stream_loader(
        PILToTensor(), batch_size=batch_size, num_workers=num_workers, seed=0, pin_memory=False
    )
    return [labels.tolist() for _, labels in loader]


def test_shards_of_a_class_sorted_folder_stream_batches_of_every_class(tmp_path):
    classes, per_class = 4, 24
    rng = np.random.default_rng(0)
    for label in range(classes):
        (tmp_path / "tree" / "train" / f"c{label}").mkdir(parents=True)
        (tmp_path / "tree" / "val" / f"c{label}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "tree" / "train" / f"c{label}" / f"{i}.png")
        Image.fromarray(pixels).save(tmp_path / "tree" / "val" / f"c{label}" / "0.png")
    make_shards(["data=folder", f"data.root={tmp_path / 'tree'}", f"out={tmp_path / 'shards'}"])
    pretrain, _, _ = shard_datasets(compose_train(["data=shards", f"data.root={tmp_path / 'shards'}"]).data)
    for workers in (0, 2):  # with 2 workers, each reads its own half of the one chunk
        batches = epoch_labels(pretrain, batch_size=16, num_workers=workers)
        assert len(batches) == classes * per_class // 16
        assert all(len(set(batch)) >= 3 for batch in batches), batches


def test_a_chunk_is_read_in_a_full_permutation_not_in_blocks(tmp_path):
    # Ids 0..599 written in order into one chunk: LitData's default shuffle permutes blocks of 256 consecutive
    # samples, so a batch of 64 spanned fewer than 256 ids.
    root = write_id_shards(tmp_path / "ids", train=600, val=8, side=4)
    pretrain, _, _ = shard_datasets(compose_train(["data=shards", f"data.root={root}"]).data)
    batches = epoch_labels(pretrain, batch_size=64, num_workers=0)
    assert sorted(i for batch in batches for i in batch) == sorted(set(i for batch in batches for i in batch))
    assert all(max(batch) - min(batch) > 256 for batch in batches), [(min(b), max(b)) for b in batches]
