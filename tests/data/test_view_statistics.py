"""The CPU view pipeline's distributions, op by op, against the figures recorded from torchvision's v1
transforms on PIL images before the pipeline moved to transforms.v2 (issue 30).

Each op is measured alone (the others off) on a synthetic image whose change reveals the draw:
- crop: an image whose red and green channels are its x and y coordinates; the output's first and last
  columns and rows give the crop's width and height (area fraction, log aspect ratio) and its flip;
- colour jitter: brightness (mean ratio), contrast (spread ratio), saturation (distance from grey ratio)
  and hue (hue shift in turns) each alone at p = 1, and the rate at which the jitter applies;
- grayscale, blur (96 px, where blur applies) and solarize: how often the image changes that way;
- the whole SimCLR view: the output's mean and spread.
1,000 images per op from seed 0. Each figure must lie within 4 standard errors of the two samples'
difference (plus 0.01 for the PIL and tensor kernels' rounding) of the recorded one.

Re-record (only when the distributions are meant to change):
PYTHONPATH=.:tests python tests/data/test_view_statistics.py --record "<what the pipeline is>"."""

from __future__ import annotations

import colorsys
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from conftest import EVERY_OP_VIEW
from PIL import Image

from selfsup.data.transforms import UNCHANGED_VIEW, view_transform

RECORDED = Path(__file__).with_name("view_statistics_v1.json")
N = 1000
MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.15)


def _outputs(image: Image.Image, resolution: int, blur: bool = False, **view) -> list[np.array]:
    """N outputs of one view on `image`, back in [0, 255] (H, W, 3), from seed 0."""
    transform = view_transform(SimpleNamespace(**{**UNCHANGED_VIEW, **view}), resolution, MEAN, STD, blur)
    torch.manual_seed(0)
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    return [((transform(image) * std + mean) * 255).permute(1, 2, 0).numpy() for _ in range(N)]


def _image(side: int, seed: int = 0) -> Image.Image:
    """Smooth colours in 40-200 (no clipping under the jitter's factors), every pixel's hue different."""
    y, x = np.mgrid[0:side, 0:side] / (side - 1)
    pixels = np.stack([40 + 160 * x, 40 + 160 * y, 40 + 160 * (1 - x) * (1 - y) ** 2], axis=-1)
    return Image.fromarray(pixels.round().astype(np.uint8))


def _gray(a: np.ndarray) -> np.ndarray:
    return a @ np.array([0.299, 0.587, 0.114])


def _hue(a: np.ndarray) -> np.ndarray:
    return np.array([colorsys.rgb_to_hsv(*(p / 255))[0] for p in a.reshape(-1, 3)[::7]])


def measure() -> dict[str, dict[str, float]]:
    """Per-sample quantities of each op, summed up as {name: {"mean", "sd"}}."""
    samples: dict[str, list[float]] = {}
    coordinates = Image.fromarray(
        np.stack([*np.meshgrid(np.arange(128) * 2, np.arange(128) * 2), np.full((128, 128), 128)], axis=-1).astype(
            np.uint8
        )
    )
    for out in _outputs(coordinates, 32, crop_scale=[0.08, 1.0], flip_p=0.5):
        left, right = out[:, 0, 0].mean(), out[:, -1, 0].mean()
        width = abs(right - left) / 2 * 32 / 31 + 1e-3  # px of the 128 px source
        height = (out[-1, :, 1].mean() - out[0, :, 1].mean()) / 2 * 32 / 31 + 1e-3
        samples.setdefault("crop.area", []).append(width * height / 128**2)
        samples.setdefault("crop.log_aspect", []).append(math.log(width / height))
        samples.setdefault("flip.rate", []).append(float(right < left))

    image = _image(32)
    source = np.asarray(image, dtype=np.float64)
    for out in _outputs(image, 32, jitter_p=1.0, brightness=0.4):
        samples.setdefault("jitter.brightness", []).append(out.mean() / source.mean())
    for out in _outputs(image, 32, jitter_p=1.0, contrast=0.4):
        samples.setdefault("jitter.contrast", []).append(out.std() / source.std())
    chroma = np.linalg.norm(source - _gray(source)[..., None])
    for out in _outputs(image, 32, jitter_p=1.0, saturation=0.4):
        samples.setdefault("jitter.saturation", []).append(np.linalg.norm(out - _gray(out)[..., None]) / chroma)
    source_hue = _hue(source)
    for out in _outputs(image, 32, jitter_p=1.0, hue=0.1):
        shift = (_hue(out) - source_hue + 0.5) % 1.0 - 0.5
        samples.setdefault("jitter.hue", []).append(float(np.median(shift)))
    for out in _outputs(image, 32, jitter_p=0.8, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1):
        samples.setdefault("jitter.rate", []).append(float(np.abs(out - source).max() > 1.5))

    for out in _outputs(image, 32, grayscale_p=0.2):
        samples.setdefault("grayscale.rate", []).append(float(np.ptp(out, axis=-1).max() < 1.5))
    for out in _outputs(image, 32, solarize_p=0.2):
        samples.setdefault("solarize.rate", []).append(float(np.abs(out - source).max() > 1.5))
    checkerboard = Image.fromarray(((np.indices((96, 96)).sum(0) // 4 % 2) * 200 + 30).astype(np.uint8)).convert("RGB")
    sharp = np.asarray(checkerboard, dtype=np.float64)
    for out in _outputs(checkerboard, 96, blur=True, blur_p=0.5):
        samples.setdefault("blur.rate", []).append(float(np.abs(out - sharp).max() > 1.5))
        samples.setdefault("blur.contrast_kept", []).append(out.std() / sharp.std())

    for out in _outputs(_image(64), 32, blur=False, **EVERY_OP_VIEW):
        samples.setdefault("simclr_view.mean", []).append(out.mean() / 255)
        samples.setdefault("simclr_view.sd", []).append(out.std() / 255)
    return {name: {"mean": float(np.mean(v)), "sd": float(np.std(v))} for name, v in samples.items()}


def test_each_op_draws_as_recorded_from_the_v1_pipeline():
    recorded = json.loads(RECORDED.read_text())
    assert recorded["n"] == N
    current = measure()
    assert current.keys() == recorded["figures"].keys()
    for name, then in recorded["figures"].items():
        now = current[name]
        tolerance = 4 * math.hypot(then["sd"], now["sd"]) / math.sqrt(N) + 0.01
        assert abs(now["mean"] - then["mean"]) <= tolerance, (name, now, then, tolerance)
        assert abs(now["sd"] - then["sd"]) <= 4 * then["sd"] / math.sqrt(N) + 0.01, (name, now, then)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--record":
        raise SystemExit(__doc__)
    import torchvision

    RECORDED.write_text(
        json.dumps(
            {"pipeline": f"{sys.argv[2]} (torchvision {torchvision.__version__})", "n": N, "figures": measure()},
            indent=1,
        )
        + "\n"
    )
    print(f"recorded {RECORDED}")
