"""selfsup/distributed.py: ShuffleBN on 2 ranks against split-BN emulation, batch shuffles, SplitBatchNorm, SyncBN."""

from __future__ import annotations

import pytest
import torch
from conftest import run_script
from distributed_harness import run_on_ranks
from torch import nn

from selfsup import distributed


def _key_encoder() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 5),
    )


def _shuffle_bn_on_rank(rank, world_size, images):
    b = images.shape[0] // world_size
    local = images[rank * b : (rank + 1) * b]
    # A different seed per rank: only rank 0's permutation, broadcast, may be used.
    shuffled, unshuffle = distributed.batch_shuffle(local, torch.Generator().manual_seed(100 + rank))
    keys = distributed.batch_unshuffle(_key_encoder()(shuffled), unshuffle)
    return shuffled, unshuffle, keys, distributed.batch_unshuffle(shuffled, unshuffle)


def test_shuffle_bn_two_ranks_equal_split_bn_emulation_and_unshuffle_restores_order():
    torch.manual_seed(0)
    images = torch.randn(8, 3, 5, 5) * 2 + 1
    results = run_on_ranks(_shuffle_bn_on_rank, images)

    # One process, same global batch and permutation: BN statistics per group of 4 = per rank.
    emulation = distributed.convert_split_batchnorm(_key_encoder(), 2)
    assert isinstance(emulation[1], distributed.SplitBatchNorm)
    shuffled, unshuffle = distributed.batch_shuffle(images, torch.Generator().manual_seed(100))
    expected_keys = distributed.batch_unshuffle(emulation(shuffled), unshuffle)

    assert torch.equal(results[0][1], results[1][1]) and torch.equal(results[0][1], unshuffle)
    assert torch.equal(torch.cat([r[0] for r in results]), shuffled)  # each rank encodes its share
    assert not torch.equal(shuffled, images)
    for rank, (_, _, _, restored) in enumerate(results):
        assert torch.equal(restored, images[rank * 4 : (rank + 1) * 4])  # exactly the original order
    torch.testing.assert_close(torch.cat([r[2] for r in results]), expected_keys, rtol=1e-5, atol=1e-6)
    # The check has teeth: full-batch BN (no shuffle, no split) gives other keys.
    assert not torch.allclose(_key_encoder()(images), expected_keys, atol=1e-3)


def test_batch_shuffle_is_a_local_permutation_on_one_process():
    x = torch.arange(12.0).view(6, 2)
    shuffled, unshuffle = distributed.batch_shuffle(x, torch.Generator().manual_seed(0))
    assert not torch.equal(shuffled, x) and torch.equal(shuffled.sort(0).values, x)
    assert torch.equal(distributed.batch_unshuffle(shuffled, unshuffle), x)


def test_split_batchnorm_groups_statistics_and_loads_like_batchnorm():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3)
    bn.weight.data.uniform_(0.5, 2)
    bn.bias.data.normal_()
    split = distributed.convert_split_batchnorm(nn.Sequential(bn), 4)[0]
    x = torch.randn(8, 3, 4, 4) * 3 + 2
    groups = [nn.BatchNorm2d(3) for _ in range(4)]
    for g in groups:
        g.load_state_dict(bn.state_dict())
    expected = torch.cat([g(c) for g, c in zip(groups, x.chunk(4))])
    torch.testing.assert_close(split(x), expected)
    torch.testing.assert_close(split.running_mean, torch.stack([g.running_mean for g in groups]).mean(0))
    torch.testing.assert_close(split.running_var, torch.stack([g.running_var for g in groups]).mean(0))
    assert int(split.num_batches_tracked) == 1
    plain = nn.BatchNorm2d(3)
    plain.load_state_dict(split.state_dict())  # checkpoints stay plain-BatchNorm compatible
    split.eval(), plain.eval()
    torch.testing.assert_close(split(x), plain(x))
    with pytest.raises(ValueError, match="not divisible"):
        split.train()(torch.randn(6, 3, 4, 4))


def test_split_conversion_keeps_a_frozen_target_frozen():
    from selfsup.methods.ema import make_target

    target = make_target(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)))
    distributed.convert_split_batchnorm(target, 2)
    assert isinstance(target[1], distributed.SplitBatchNorm)
    assert not any(p.requires_grad for p in target.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="SyncBatchNorm runs on GPUs only")
def test_syncbn_equals_full_batch_batchnorm_on_gpus(tmp_path):
    proc = run_script("scripts/gpu_check.py", ["--only", "syncbn", "--out", str(tmp_path)])  # part 1 of make gpu-check
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert "[1 syncbn] passed" in proc.stdout
