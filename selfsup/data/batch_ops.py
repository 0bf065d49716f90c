"""Random image ops on a whole batch at once, every random choice (apply or not, the factor, the
order of the colour adjustments, the blur sigma) drawn per sample, as torchvision's per-image
transforms draw them: the building blocks of `selfsup.data.gpu_augment.DeviceAugment`. Input is a
float batch (B, C, H, W) in [0, 1] (`to_float` makes one from uint8) on any device; no op syncs
with the host. `denormalize` turns a normalised batch back into such pixels (for pictures)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as PIL's convert("L")
SOLARIZE_THRESHOLD = 128 / 255  # RandomSolarize(threshold=128) on uint8 images
BLUR_SIGMA = (0.1, 2.0)  # SimCLR's GaussianBlur sigma range


def _rand(batch: int, device, generator=None) -> Tensor:
    return torch.rand(batch, device=device, generator=generator)


def _uniform(batch: int, low: float, high: float, device, generator=None) -> Tensor:
    return low + (high - low) * _rand(batch, device, generator)


def _per_sample(values: Tensor) -> Tensor:
    return values.view(-1, 1, 1, 1)


def to_float(images: Tensor) -> Tensor:
    """uint8 [0, 255] -> float32 [0, 1]; float input is returned as float32."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images.float()


def denormalize(x: Tensor, mean, std) -> Tensor:
    """Undo `Normalize(mean, std)`: (B, C, H, W) back to [0, 1] pixels."""
    mean = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return (x.float() * std + mean).clamp(0.0, 1.0)


def grayscale(images: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma."""
    r, g, b = images.unbind(dim=1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def adjust_brightness(images: Tensor, factor: Tensor) -> Tensor:
    return (images * _per_sample(factor)).clamp_(0, 1)


def _blend(images: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    f = _per_sample(factor)
    return (f * images + (1 - f) * other).clamp_(0, 1)


def adjust_contrast(images: Tensor, factor: Tensor) -> Tensor:
    mean = grayscale(images).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(images, mean, factor)


def adjust_saturation(images: Tensor, factor: Tensor) -> Tensor:
    return _blend(images, grayscale(images), factor)


def _rgb_to_hsv(images: Tensor) -> Tensor:
    r, g, b = images.unbind(dim=1)
    maxc, minc = images.amax(dim=1), images.amin(dim=1)
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    cr_div = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / cr_div, (maxc - g) / cr_div, (maxc - b) / cr_div
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack((h, s, maxc), dim=1)


def _hsv_to_rgb(hsv: Tensor) -> Tensor:
    h, s, v = hsv.unbind(dim=1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp(0, 1)
    q = (v * (1.0 - s * f)).clamp(0, 1)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0, 1)
    # sector i -> (r, g, b) from (v, q, p, p, t, v), (t, v, v, q, p, p), (p, p, t, v, v, q)
    table = torch.stack(
        (
            torch.stack((v, q, p, p, t, v), dim=1),
            torch.stack((t, v, v, q, p, p), dim=1),
            torch.stack((p, p, t, v, v, q), dim=1),
        ),
        dim=1,
    )  # (B, 3, 6, H, W)
    index = i.unsqueeze(1).unsqueeze(2).expand(-1, 3, 1, -1, -1)
    return table.gather(2, index).squeeze(2)


def adjust_hue(images: Tensor, factor: Tensor) -> Tensor:
    """Rotate the hue by `factor` (per sample, in [-0.5, 0.5] turns)."""
    hsv = _rgb_to_hsv(images)
    h = torch.remainder(hsv[:, 0] + factor.view(-1, 1, 1), 1.0)
    return _hsv_to_rgb(torch.stack((h, hsv[:, 1], hsv[:, 2]), dim=1))


def color_jitter(
    images: Tensor,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    p: float = 1.0,
    random_order: bool = True,
    generator=None,
) -> Tensor:
    """RandomApply([ColorJitter(brightness, contrast, saturation, hue)], p) on each image of a float
    batch in [0, 1]: per sample, whether to apply, the four factors, and (random_order) the order of
    the four adjustments, as torchvision's ColorJitter draws them per image."""
    batch, device = images.shape[0], images.device
    applied = _rand(batch, device, generator) < p
    ops = []
    for op, strength, identity in (
        (adjust_brightness, brightness, 1.0),
        (adjust_contrast, contrast, 1.0),
        (adjust_saturation, saturation, 1.0),
        (adjust_hue, hue, 0.0),
    ):
        if strength > 0:
            low, high = (-strength, strength) if op is adjust_hue else (max(0.0, 1 - strength), 1 + strength)
            factor = _uniform(batch, low, high, device, generator)
            ops.append((op, factor, identity))
    if not ops:
        return images
    if not random_order:
        for op, factor, identity in ops:
            images = op(images, torch.where(applied, factor, identity))
        return images
    # A random permutation of the ops per sample; at position k each op runs on the whole batch with
    # the identity factor for the samples that have another op there (no host sync, no gather).
    order = torch.rand(batch, len(ops), device=device, generator=generator).argsort(dim=1)
    for k in range(len(ops)):
        for j, (op, factor, identity) in enumerate(ops):
            here = applied & (order[:, k] == j)
            if op is adjust_hue:  # the HSV round trip is not bit-exact: keep the others untouched
                images = torch.where(_per_sample(here), op(images, factor), images)
            else:
                images = op(images, torch.where(here, factor, identity))
    return images


def random_grayscale(images: Tensor, p: float, generator=None) -> Tensor:
    chosen = _rand(images.shape[0], images.device, generator) < p
    return torch.where(_per_sample(chosen), grayscale(images).expand_as(images), images)


def gaussian_kernels(kernel_size: int, sigma: Tensor) -> Tensor:
    """(B, kernel_size) normalised 1-D Gaussians, one per sigma (torchvision's kernel)."""
    half = (kernel_size - 1) * 0.5
    x = torch.linspace(-half, half, kernel_size, device=sigma.device, dtype=torch.float32)
    pdf = torch.exp(-0.5 * (x.unsqueeze(0) / sigma.unsqueeze(1)) ** 2)
    return pdf / pdf.sum(dim=1, keepdim=True)


def gaussian_blur(images: Tensor, kernel_size: int, sigma: Tensor) -> Tensor:
    """Separable Gaussian blur with one sigma per sample (reflect padding, as torchvision):
    a depthwise (grouped) convolution along each axis over the whole batch."""
    b, c, h, w = images.shape
    kernels = gaussian_kernels(kernel_size, sigma).to(images.dtype).repeat_interleave(c, dim=0)  # (B*C, k)
    pad = kernel_size // 2
    x = F.pad(images.reshape(1, b * c, h, w), (pad, pad, pad, pad), mode="reflect")
    x = F.conv2d(x, kernels.view(b * c, 1, kernel_size, 1), groups=b * c)
    x = F.conv2d(x, kernels.view(b * c, 1, 1, kernel_size), groups=b * c)
    return x.view(b, c, h, w)


def random_gaussian_blur(images: Tensor, p: float, kernel_size: int, sigma_range=BLUR_SIGMA, generator=None) -> Tensor:
    batch, device = images.shape[0], images.device
    chosen = _rand(batch, device, generator) < p
    sigma = _uniform(batch, sigma_range[0], sigma_range[1], device, generator)
    return torch.where(_per_sample(chosen), gaussian_blur(images, kernel_size, sigma), images)


def random_solarize(images: Tensor, p: float, threshold: float = SOLARIZE_THRESHOLD, generator=None) -> Tensor:
    chosen = _per_sample(_rand(images.shape[0], images.device, generator) < p)
    return torch.where(chosen & (images >= threshold), 1 - images, images)


def random_hflip(images: Tensor, p: float, generator=None) -> Tensor:
    chosen = _rand(images.shape[0], images.device, generator) < p
    return torch.where(_per_sample(chosen), images.flip(-1), images)
