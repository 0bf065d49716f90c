"""The pretext-task inputs and labels (selfsup/data/pretext.py): rotations, jigsaw permutations and tiles, masks,
Lab colour."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import compose_train

from selfsup.data.pretext import (
    PERMUTATION_DIR,
    apply_mask,
    grayscale_input,
    inverse_permutation,
    jigsaw_tiles,
    lab_to_rgb,
    load_permutations,
    make_mask,
    rgb_to_lab,
    rotate_batch,
)

PERMUTATION_COUNTS = (100, 1000, 2000)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_all_rotations_label_k_is_rot90_by_k():
    x = torch.rand(3, 2, 5, 5)
    images, labels = rotate_batch(x, all_rotations=True)
    assert images.shape == (12, 2, 5, 5)
    for image, k, source in zip(images, labels, x.repeat(4, 1, 1, 1)):
        assert torch.equal(image, torch.rot90(source, int(k), dims=(1, 2)))
    assert torch.equal(torch.bincount(labels), torch.full((4,), 3))


def test_random_rotation_label_k_is_rot90_by_k():
    x = torch.rand(64, 3, 4, 4)
    images, labels = rotate_batch(x, all_rotations=False)
    assert images.shape == x.shape and set(labels.tolist()) == {0, 1, 2, 3}
    for image, k, source in zip(images, labels, x):
        assert torch.equal(image, torch.rot90(source, int(k), dims=(1, 2)))


@pytest.mark.parametrize("count", PERMUTATION_COUNTS)
def test_stored_permutations_are_distinct_permutations(count):
    stored = np.load(PERMUTATION_DIR / f"jigsaw_permutations_{count}.npy")
    assert stored.dtype == np.uint8 and stored.shape == (count, 9)
    assert (np.sort(stored, axis=1) == np.arange(9)).all()
    assert len(np.unique(stored, axis=0)) == count


def test_stored_permutations_are_the_greedy_max_hamming_selection():
    """Recompute Noroozi & Favaro's greedy selection (Alg. 1; scripts/make_jigsaw_permutations.py, seed 0)
    row by row: row 0 is the seeded random pick among all 9! permutations in lexicographic order; row k
    is the first, in that order, of the unchosen permutations with the largest summed Hamming distance
    to rows 0..k-1. Each row's scores are computed afresh from per-position counts of the rows above
    (a permutation c is sum_p (k - #{j < k: row_j[p] = c[p]}) away from them): every row of the first
    100, then every 37th of the 2000 (all sets are its prefixes)."""
    stored = np.load(PERMUTATION_DIR / f"jigsaw_permutations_{max(PERMUTATION_COUNTS)}.npy").astype(np.int64)
    candidates = np.array(list(itertools.permutations(range(9))), dtype=np.int64)  # lexicographic
    code = lambda perms: perms @ (9 ** np.arange(8, -1, -1))  # noqa: E731 - increasing in lexicographic order
    index = np.searchsorted(code(candidates), code(stored))
    assert (candidates[index] == stored).all()
    assert index[0] == np.random.default_rng(0).integers(len(candidates))

    checked = set(range(1, 100)) | set(range(100, len(stored), 37))
    counts = np.zeros((9, 9), dtype=np.int64)  # counts[p, v]: rows above with tile v at position p
    chosen = np.zeros(len(candidates), dtype=bool)
    for k in range(1, len(stored)):
        counts[np.arange(9), stored[k - 1]] += 1
        chosen[index[k - 1]] = True
        if k in checked:
            scores = 9 * k - counts[np.arange(9), candidates].sum(axis=1)
            scores[chosen] = -1
            assert np.argmax(scores) == index[k], f"row {k} is not the greedy choice"


def test_smaller_permutation_sets_are_prefixes_of_the_greedy_sequence():
    largest = load_permutations(max(PERMUTATION_COUNTS))
    for count in PERMUTATION_COUNTS:
        perms = load_permutations(count)
        assert perms.dtype == torch.long and torch.equal(perms, largest[:count])


def test_missing_permutation_set_lists_available_counts():
    with pytest.raises(FileNotFoundError, match=r"available: \[100, 1000, 2000\]"):
        load_permutations(7)


def test_inverse_permutation():
    perms = load_permutations(100)
    inverse = inverse_permutation(perms)
    assert torch.equal(perms.gather(1, inverse), torch.arange(9).expand(100, 9))
    assert torch.equal(inverse.gather(1, perms), torch.arange(9).expand(100, 9))


def grid_cells(x: torch.Tensor, cell: int) -> torch.Tensor:
    """(B, 9, C, cell, cell) in row-major order, the obvious slow way."""
    cells = [x[:, :, r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] for r in range(3) for c in range(3)]
    return torch.stack(cells, dim=1)


def test_tiles_without_jitter_are_the_permuted_grid_cells_and_the_inverse_restores_them():
    x = torch.rand(8, 3, 30, 30)
    perms = load_permutations(100)
    tiles, labels = jigsaw_tiles(x, perms, tile_size=10, jitter=False)
    assert tiles.shape == (8, 9, 3, 10, 10) and labels.shape == (8,)
    cells = grid_cells(x, 10)
    order = perms[labels]
    assert torch.equal(tiles, cells[torch.arange(8)[:, None], order])  # output position i holds cell perm[i]
    restore = inverse_permutation(order)
    assert torch.equal(tiles[torch.arange(8)[:, None], restore], cells)


def test_jittered_tiles_are_crops_inside_their_cells():
    x = torch.arange(2 * 36 * 36, dtype=torch.float32).view(2, 1, 36, 36)  # every pixel value unique
    perms = load_permutations(1000)
    tiles, labels = jigsaw_tiles(x, perms)
    assert tiles.shape == (2, 9, 1, 9, 9)  # round(0.75 * 12)
    for b in range(2):
        for i, cell in enumerate(perms[labels[b]].tolist()):
            top, left = divmod(int(tiles[b, i, 0, 0, 0]) - b * 36 * 36, 36)
            assert cell // 3 * 12 <= top <= cell // 3 * 12 + 3 and cell % 3 * 12 <= left <= cell % 3 * 12 + 3
            assert torch.equal(tiles[b, i, 0], x[b, 0, top : top + 9, left : left + 9])


def test_color_drop_keeps_one_channel_per_tile():
    x = torch.rand(4, 3, 24, 24)
    tiles, _ = jigsaw_tiles(x, load_permutations(100), color_drop=True)
    assert torch.equal(tiles, tiles[:, :, :1].expand_as(tiles))
    plain, _ = jigsaw_tiles(x, load_permutations(100), color_drop=False)
    assert not torch.equal(plain, plain[:, :, :1].expand_as(plain))


@pytest.mark.parametrize("size", [32, 64, 128])
def test_central_mask_is_the_centred_half_side_square(size):
    mask = make_mask("central", 2, size, size, "cpu")
    assert mask.shape == (2, 1, size, size) and mask.dtype == torch.float32
    assert mask.mean().item() == 0.25
    half = size // 2
    assert mask[:, :, size // 4 : size // 4 + half, size // 4 : size // 4 + half].all()


def test_random_block_covers_exactly_the_area_at_varying_positions():
    mask = make_mask("random_block", 16, 64, 64, "cpu", area=0.25)
    assert torch.equal(mask.sum(dim=(1, 2, 3)), torch.full((16,), 32.0 * 32))
    assert len({tuple(m.nonzero()[0].tolist()) for m in mask}) > 1


def test_random_region_covers_about_the_area():
    mask = make_mask("random_region", 16, 64, 64, "cpu", area=0.2)
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    assert torch.allclose(mask.mean(dim=(1, 2, 3)), torch.full((16,), 0.2), atol=0.02)
    assert not torch.equal(mask[0], mask[1])


def test_invalid_masks_raise():
    with pytest.raises(ValueError, match="does not fit"):
        make_mask("central", 1, 8, 128, "cpu", area=0.5)
    for area in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"\(0, 1\)"):
            make_mask("random_block", 1, 32, 32, "cpu", area=area)
    with pytest.raises(ValueError, match="unknown mask kind"):
        make_mask("circle", 1, 32, 32, "cpu")


def test_apply_mask_fills_hidden_pixels_with_the_mean():
    x = torch.rand(2, 3, 16, 16)
    mask = make_mask("central", 2, 16, 16, "cpu")
    mean = torch.tensor([0.4, 0.5, 0.6])
    out = apply_mask(x, mask, mean)
    hidden = mask.bool().expand_as(x)
    assert torch.equal(out[~hidden], x[~hidden])
    assert torch.equal(out[:, :, 4:12, 4:12], mean.view(1, 3, 1, 1).expand(2, 3, 8, 8))


def test_lab_of_reference_colours():
    rgb = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]).view(4, 3, 1, 1)
    expected = torch.tensor([[100.0, 0.0, 0.0], [0.0, 0.0, 0.0], [53.24, 80.09, 67.20], [32.30, 79.19, -107.86]])
    assert torch.allclose(rgb_to_lab(rgb).view(4, 3), expected, atol=0.05)


def test_lab_round_trip():
    x = torch.rand(4, 3, 16, 16)
    lab = rgb_to_lab(x)
    assert torch.allclose(lab_to_rgb(lab), x, atol=1e-3)
    assert torch.allclose(lab_to_rgb(rgb_to_lab(x.double())), x.double(), atol=1e-6)


def test_grayscale_input_is_normalised_replicated_lightness():
    x = torch.rand(2, 3, 8, 8)
    gray = grayscale_input(x)
    assert gray.shape == (2, 3, 8, 8)
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 0], gray[:, 2])
    assert torch.allclose(gray[:, 0], rgb_to_lab(x)[:, 0] / 50 - 1)
    assert gray.min() >= -1 and gray.max() <= 1


def test_jigsaw_tiles_are_normalised_per_tile_and_channel():
    """Noroozi's reference normalises every tile on its own, per channel: zero mean, unit (unbiased) std."""
    from selfsup.methods.jigsaw import Jigsaw

    cfg = compose_train(["method=jigsaw", "data=digits", "data.resolution=30", "method.num_permutations=100"])
    model = Jigsaw(cfg)
    fed = []
    model.backbone.register_forward_pre_hook(lambda module, args: fed.append(args[0]))
    images = torch.rand(4, 3, 30, 30) * torch.tensor([1.0, 0.5, 0.2]).view(1, 3, 1, 1) + 3.0
    model.training_loss([images])
    tiles = fed[0].view(4, 9, 3, *fed[0].shape[-2:]).flatten(-2)  # the first backbone call: the 36 tiles
    assert tiles.shape[-1] > 1
    torch.testing.assert_close(tiles.mean(-1), torch.zeros(4, 9, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(tiles.std(-1), torch.ones(4, 9, 3), atol=1e-5, rtol=0)
