"""Inputs and labels for the pretext tasks, built from an image batch on its own device.

Everything is batched tensor ops so that pretext construction runs on the GPU after the loader,
never per sample in PIL. Images are (B, C, H, W).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

PERMUTATION_DIR = Path(__file__).parent


# --- RotNet (Gidaris et al., 2018) ---------------------------------------------------------------


def rotate_batch(x: torch.Tensor, all_rotations: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Label k means `torch.rot90(image, k, dims=(2, 3))`, i.e. k * 90 degrees counter-clockwise.

    With `all_rotations` every image appears in all four rotations (4B images, grouped by k), which
    the paper found better than one random rotation per image; otherwise each image gets one random k.
    """
    if x.shape[2] != x.shape[3]:
        raise ValueError(f"rotation needs square images to keep one batch shape, got {tuple(x.shape[2:])}")
    if all_rotations:
        images = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(4)])
        labels = torch.arange(4, device=x.device).repeat_interleave(x.shape[0])
        return images, labels
    labels = torch.randint(4, (x.shape[0],), device=x.device)
    images = x.clone()
    for k in range(1, 4):
        selected = labels == k
        images[selected] = torch.rot90(x[selected], k, dims=(2, 3))
    return images, labels


# --- Jigsaw (Noroozi & Favaro, 2016) -------------------------------------------------------------


def load_permutations(n: int) -> torch.Tensor:
    """The stored greedy maximal-Hamming set of `n` permutations of the 9 tiles, (n, 9) long."""
    path = PERMUTATION_DIR / f"jigsaw_permutations_{n}.npy"
    if not path.exists():
        stored = PERMUTATION_DIR.glob("jigsaw_permutations_*.npy")
        available = sorted(int(p.stem.rsplit("_", 1)[1]) for p in stored)
        raise FileNotFoundError(
            f"no jigsaw permutation set of size {n}; available: {available} "
            f"(generate more with scripts/make_jigsaw_permutations.py)"
        )
    return torch.from_numpy(np.load(path).astype(np.int64))


def inverse_permutation(perm: torch.Tensor) -> torch.Tensor:
    """Inverse along the last dim: `perm[..., inverse[..., j]] == j`."""
    return torch.argsort(perm, dim=-1)


def jigsaw_tiles(
    x: torch.Tensor,
    permutations: torch.Tensor,
    grid: int = 3,
    tile_size: int | None = None,
    jitter: bool = True,
    color_drop: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut each image into a grid x grid puzzle, shuffle it with a random permutation from the set.

    Returns tiles (B, grid**2, C, t, t) where output position i holds input cell perm[i] (cells in
    row-major order), and the permutation index per sample as the label. Tiles are smaller than their
    cells (default ~3/4) and placed at a random offset inside them (`jitter`), so that continuing edges
    and lines across tile borders cannot solve the puzzle; `color_drop` keeps one random channel per tile
    (replicated to C) to block the chromatic-aberration shortcut.
    """
    batch, channels, height, width = x.shape
    tiles_per_image = grid * grid
    if permutations.shape[1] != tiles_per_image:
        raise ValueError(
            f"permutations have {permutations.shape[1]} entries, a {grid}x{grid} grid needs {tiles_per_image}"
        )
    cell_h, cell_w = height // grid, width // grid
    t = tile_size if tile_size is not None else max(1, round(0.75 * min(cell_h, cell_w)))
    if not 1 <= t <= min(cell_h, cell_w):
        raise ValueError(f"tile size {t} must be in [1, {min(cell_h, cell_w)}] (the cell size)")
    device = x.device

    labels = torch.randint(len(permutations), (batch,), device=device)
    cells = permutations.to(device)[labels]  # (B, T): output i <- cell
    if jitter:
        offset_y = torch.randint(cell_h - t + 1, (batch, tiles_per_image), device=device)
        offset_x = torch.randint(cell_w - t + 1, (batch, tiles_per_image), device=device)
    else:
        offset_y = torch.full((batch, tiles_per_image), (cell_h - t) // 2, device=device)
        offset_x = torch.full((batch, tiles_per_image), (cell_w - t) // 2, device=device)
    span = torch.arange(t, device=device)
    rows = ((cells // grid) * cell_h + offset_y)[..., None] + span  # (B, T, t)
    cols = ((cells % grid) * cell_w + offset_x)[..., None] + span  # (B, T, t)
    sample = torch.arange(batch, device=device)[:, None, None, None, None]
    channel = torch.arange(channels, device=device)[None, None, :, None, None]
    tiles = x[sample, channel, rows[:, :, None, :, None], cols[:, :, None, None, :]]  # (B, T, C, t, t)

    if color_drop:
        keep = torch.randint(channels, (batch, tiles_per_image, 1, 1, 1), device=device)
        tiles = tiles.gather(2, keep.expand(-1, -1, 1, t, t)).expand(-1, -1, channels, -1, -1).contiguous()
    return tiles, labels


def normalize_tiles(tiles: torch.Tensor) -> torch.Tensor:
    """Each tile (..., C, t, t) to zero mean and unit std per channel, independently of the others, as
    the reference code does (Noroozi's JigsawPuzzlePytorch: `Normalize(tile.view(3, -1).mean(1),
    tile.view(3, -1).std(1))` per tile, a zero std left at 1): the puzzle cannot then be solved by
    matching brightness, contrast or colour across tile edges. std is torch's (unbiased), as there."""
    flat = tiles.flatten(-2)
    mean, std = flat.mean(-1, keepdim=True), flat.std(-1, keepdim=True)
    return ((flat - mean) / torch.where(std > 0, std, torch.ones_like(std))).view_as(tiles)


# --- Context encoder (Pathak et al., 2016) -------------------------------------------------------


def _square_mask(top: torch.Tensor, left: torch.Tensor, side: int, height: int, width: int) -> torch.Tensor:
    """(B, 1, H, W) with ones on [top, top + side) x [left, left + side) per sample."""
    rows = torch.arange(height, device=top.device)
    cols = torch.arange(width, device=top.device)
    inside_rows = (rows >= top[:, None]) & (rows < top[:, None] + side)  # (B, H)
    inside_cols = (cols >= left[:, None]) & (cols < left[:, None] + side)  # (B, W)
    return (inside_rows[:, :, None] & inside_cols[:, None, :]).unsqueeze(1).float()


def make_mask(
    kind: str,
    batch: int,
    height: int,
    width: int,
    device: torch.device | str | None = None,
    area: float = 0.25,
    block_size: int | None = None,
) -> torch.Tensor:
    """(B, 1, H, W) float mask, 1 = hidden pixel to be inpainted, covering `area` of the image.

    central: a centred square (area 1/4 -> side H/2, the paper's setting); random_block: one such
    square at a random position per sample; random_region: a random union of `block_size` blocks
    (default ~1/16 of the short side) covering about `area`, chosen per sample as the top-scoring cells
    of a smoothed noise field so that they clump into irregular regions (the paper's point: no fixed
    boundary for the network to latch onto).
    """
    if not 0.0 < area < 1.0:
        raise ValueError(f"mask area must be in (0, 1), got {area}")
    side = round(math.sqrt(area * height * width))
    if kind in ("central", "random_block"):
        if not 1 <= side <= min(height, width):
            raise ValueError(f"a square mask of area {area} (side {side}) does not fit a {height}x{width} image")
        if kind == "central":
            top = torch.full((batch,), (height - side) // 2, device=device)
            left = torch.full((batch,), (width - side) // 2, device=device)
        else:
            top = torch.randint(height - side + 1, (batch,), device=device)
            left = torch.randint(width - side + 1, (batch,), device=device)
        return _square_mask(top, left, side, height, width)
    if kind == "random_region":
        block = block_size if block_size is not None else max(1, min(height, width) // 16)
        if not 1 <= block <= min(height, width):
            raise ValueError(f"block size {block} does not fit a {height}x{width} image")
        grid_h, grid_w = math.ceil(height / block), math.ceil(width / block)
        noise = F.avg_pool2d(
            torch.rand(batch, 1, grid_h, grid_w, device=device), 3, stride=1, padding=1, count_include_pad=False
        )
        hidden = torch.topk(noise.flatten(1), max(1, round(area * grid_h * grid_w)), dim=1).indices
        cells = torch.zeros(batch, grid_h * grid_w, device=device).scatter_(1, hidden, 1.0)
        cells = cells.view(batch, 1, grid_h, grid_w)
        return cells.repeat_interleave(block, dim=2).repeat_interleave(block, dim=3)[:, :, :height, :width]
    raise ValueError(f"unknown mask kind {kind!r}; choose central, random_block or random_region")


def apply_mask(x: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Replace hidden pixels by `fill` (C,), the dataset mean, so the hole carries no image statistics."""
    return torch.where(mask.bool(), fill.to(x).view(1, -1, 1, 1), x)


# --- Colorization (Zhang et al., 2016) -----------------------------------------------------------
# sRGB with the D65 white point; L in [0, 100], a and b roughly in [-110, 110].

_XYZ_FROM_RGB = torch.tensor(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]],
    dtype=torch.float64,
)
_RGB_FROM_XYZ = torch.linalg.inv(_XYZ_FROM_RGB)
_D65_WHITE = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)
_EPSILON = (6 / 29) ** 3  # CIE: below it f(t) is linear, avoiding the infinite slope of the cube root


def _channel_matmul(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,bjhw->bihw", matrix.to(x), x)


def rgb_to_lab(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) sRGB in [0, 1] -> CIE Lab."""
    x = x.clamp(0.0, 1.0)
    linear = torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
    xyz = _channel_matmul(_XYZ_FROM_RGB, linear) / _D65_WHITE.to(x).view(1, 3, 1, 1)
    f = torch.where(xyz > _EPSILON, xyz.clamp_min(_EPSILON) ** (1 / 3), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    fx, fy, fz = f.unbind(1)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE Lab -> sRGB in [0, 1]; out-of-gamut colours (e.g. predicted ab) are clipped."""
    lightness, a, b = lab.unbind(1)
    fy = (lightness + 16) / 116
    f = torch.stack([fy + a / 500, fy, fy - b / 200], dim=1)
    xyz = torch.where(f > 6 / 29, f**3, 3 * (6 / 29) ** 2 * (f - 4 / 29))
    xyz = xyz * _D65_WHITE.to(lab).view(1, 3, 1, 1)
    linear = _channel_matmul(_RGB_FROM_XYZ, xyz).clamp(0.0, 1.0)
    gamma = 1.055 * linear.clamp_min(0.0031308) ** (1 / 2.4) - 0.055  # clamp: no NaN gradient near 0
    rgb = torch.where(linear <= 0.0031308, 12.92 * linear, gamma)
    return rgb.clamp(0.0, 1.0)


def lightness_input(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Normalised RGB -> the grey image of the same lightness (L with a = b = 0, the same value in every
    channel), normalised with the same `mean` / `std` (B, 3, 1, 1): colorization's backbone input, in
    training and in every evaluation (method.evaluation_input). Computed in float32."""
    with torch.autocast(images.device.type, enabled=False):
        lightness = rgb_to_lab((images.float() * std + mean).clamp(0.0, 1.0))[:, :1]
        grey = lab_to_rgb(torch.cat([lightness, torch.zeros_like(lightness).expand(-1, 2, -1, -1)], dim=1))
        return (grey - mean) / std


def grayscale_input(x: torch.Tensor) -> torch.Tensor:
    """The L channel scaled to [-1, 1] and replicated to 3 channels, so an RGB backbone sees only lightness."""
    lightness = rgb_to_lab(x)[:, :1]
    return (lightness / 50 - 1).repeat(1, 3, 1, 1)
