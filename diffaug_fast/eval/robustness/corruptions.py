"""Fashion-MNIST-C, made on the fly: 15 ImageNet-C-style corruptions × 5 severities on batched tensors.

Every function maps images in [0, 1] of shape [N, C, H, W] to corrupted images in [0, 1], deterministic
given a ``torch.Generator``. Severity parameters follow ImageNet-C (Hendrycks & Dietterich, 2019) where the
operation does not depend on the image size (noise, brightness, contrast, JPEG), and are rescaled from
224 px to 28 px where it does (blur radii, elastic displacement, fog scale). Frost has no offline frost
photographs here; it is substituted by a procedurally grown ice-crystal texture (documented in the README).
"""
from __future__ import annotations

import io
import math

import numpy as np
import torch

from diffaug_fast import streams
import torch.nn.functional as F

SEVERITIES = (1, 2, 3, 4, 5)


def _gaussian_kernel(sigma: float, device) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    k = torch.exp(-x**2 / (2 * sigma**2))
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding."""
    k = _gaussian_kernel(sigma, x.device)
    c, r = x.shape[1], len(k) // 2
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _conv_same(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Per-image kernels [N, k, k] (or one [k, k]) applied to every channel, reflect padding."""
    n, c, h, w = x.shape
    kernel = kernel.expand(n, *kernel.shape[-2:]) if kernel.dim() == 2 else kernel
    r = kernel.shape[-1] // 2
    padded = F.pad(x, (r, r, r, r), mode="reflect").reshape(1, n * c, h + 2 * r, w + 2 * r)
    weight = kernel.repeat_interleave(c, 0).unsqueeze(1)
    return F.conv2d(padded, weight, groups=n * c).reshape(n, c, h, w)


# --- noise -------------------------------------------------------------------------------------------------------

def gaussian_noise(x, severity, gen):
    c = (0.08, 0.12, 0.18, 0.26, 0.38)[severity - 1]
    return x + c * torch.randn(x.shape, generator=gen).to(x)


def shot_noise(x, severity, gen):
    c = (60, 25, 12, 5, 3)[severity - 1]  # photons per unit intensity: Poisson counts / c
    return torch.poisson(x.cpu().clamp(0, 1) * c, generator=gen).to(x) / c


def impulse_noise(x, severity, gen):
    amount = (0.03, 0.06, 0.09, 0.17, 0.27)[severity - 1]  # salt-and-pepper, half each
    u = torch.rand(x.shape, generator=gen).to(x)
    return torch.where(u < amount / 2, torch.zeros_like(x), torch.where(u > 1 - amount / 2, torch.ones_like(x), x))


# --- blur --------------------------------------------------------------------------------------------------------

def defocus_blur(x, severity, gen):
    radius, alias = ((1.0, 0.1), (1.5, 0.3), (2.0, 0.4), (2.5, 0.5), (3.0, 0.5))[severity - 1]
    size = 2 * int(math.ceil(radius)) + 1
    ax = torch.arange(size, device=x.device, dtype=torch.float32) - size // 2
    disk = ((ax[:, None] ** 2 + ax[None, :] ** 2) <= radius**2 + 0.25).float()
    out = _conv_same(x, disk / disk.sum())
    return gaussian_blur(out, alias) if alias > 0.2 else out


def glass_blur(x, severity, gen):
    sigma, delta, iterations = ((0.35, 1, 1), (0.45, 1, 2), (0.55, 1, 3), (0.6, 2, 2), (0.75, 2, 3))[severity - 1]
    n, c, h, w = x.shape
    out = gaussian_blur(x, sigma)
    rows = torch.arange(h, device=x.device).view(1, h, 1).expand(n, h, w)
    cols = torch.arange(w, device=x.device).view(1, 1, w).expand(n, h, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1).expand(n, h, w)
    for _ in range(iterations):  # each pixel takes the value of a random neighbour within delta: local scrambling
        dy = torch.randint(-delta, delta + 1, (n, h, w), generator=gen).to(x.device)
        dx = torch.randint(-delta, delta + 1, (n, h, w), generator=gen).to(x.device)
        src_r, src_c = (rows + dy).clamp(0, h - 1), (cols + dx).clamp(0, w - 1)
        out = out.permute(0, 2, 3, 1)[batch, src_r, src_c].permute(0, 3, 1, 2)
    return gaussian_blur(out, sigma)


def motion_blur(x, severity, gen):
    length = (3, 5, 7, 9, 11)[severity - 1]
    n = x.shape[0]
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.pi / 4  # ±45°, as ImageNet-C
    ax = torch.arange(length, dtype=torch.float32) - length // 2
    kernels = torch.zeros(n, length, length)
    for i in range(length):  # a line of `length` taps through the centre at the image's angle
        r = (ax[i] * torch.sin(angle)).round().long() + length // 2
        cidx = (ax[i] * torch.cos(angle)).round().long() + length // 2
        kernels[torch.arange(n), r, cidx] += 1.0
    kernels = kernels / kernels.sum((1, 2), keepdim=True)
    return _conv_same(x, kernels.to(x))


def zoom_blur(x, severity, gen):
    zooms = (np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
             np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03))[severity - 1]
    h, w = x.shape[-2:]
    acc = x.clone()
    for z in zooms[1:]:
        big = F.interpolate(x, scale_factor=float(z), mode="bilinear", align_corners=False)
        top, left = (big.shape[-2] - h) // 2, (big.shape[-1] - w) // 2
        acc += big[..., top:top + h, left:left + w]
    return acc / len(zooms)


# --- weather-like ------------------------------------------------------------------------------------------------

def _plasma(n, size, gen, decay: float, device) -> torch.Tensor:
    """Fractal (multi-octave) noise in [0, 1], [n, 1, size, size]; the stand-in for ImageNet-C's diamond-square."""
    total = torch.zeros(n, 1, size, size, device=device)
    amp, cells = 1.0, 2
    while cells <= size:
        coarse = torch.rand(n, 1, cells, cells, generator=gen).to(device)
        total += amp * F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
        amp, cells = amp * decay, cells * 2
    total -= total.amin((2, 3), keepdim=True)
    return total / total.amax((2, 3), keepdim=True).clamp_min(1e-8)


def fog(x, severity, gen):
    strength, decay = ((0.4, 0.6), (0.6, 0.6), (0.8, 0.55), (1.0, 0.5), (1.3, 0.45))[severity - 1]
    peak = x.amax((1, 2, 3), keepdim=True)
    fogged = x + strength * _plasma(x.shape[0], x.shape[-1], gen, decay, x.device)
    return fogged * peak / (peak + strength)


def frost(x, severity, gen):
    # Substitute for ImageNet-C's frost photographs: thresholded, blurred fractal noise as ice crystals.
    image_w, frost_w = ((1.0, 0.3), (0.9, 0.4), (0.8, 0.45), (0.75, 0.5), (0.7, 0.55))[severity - 1]
    n, size = x.shape[0], x.shape[-1]
    crystals = _plasma(n, size, gen, 0.8, x.device)
    crystals = gaussian_blur((crystals > 0.55).float() * crystals, 0.6)
    crystals = crystals / crystals.amax((2, 3), keepdim=True).clamp_min(1e-8)
    return image_w * x + frost_w * crystals


def snow(x, severity, gen):
    density, length, dim = ((0.04, 3, 0.9), (0.07, 3, 0.85), (0.1, 5, 0.8), (0.13, 5, 0.75),
                            (0.16, 7, 0.7))[severity - 1]
    n, c, h, w = x.shape
    flakes = (torch.rand(n, 1, h, w, generator=gen) < density).float().to(x)
    streaks = motion_blur(flakes, {3: 1, 5: 2, 7: 3}[length], gen) * 2.5  # flakes falling: short motion streaks
    base = torch.maximum(dim * x, x.mean((1, 2, 3), keepdim=True) * 0.5 + 0.5 * dim * x)
    return base + streaks.clamp(0, 1)


# --- digital -----------------------------------------------------------------------------------------------------

def brightness(x, severity, gen):
    return x + (0.1, 0.2, 0.3, 0.4, 0.5)[severity - 1]


def contrast(x, severity, gen):
    c = (0.4, 0.3, 0.2, 0.1, 0.05)[severity - 1]
    mean = x.mean((1, 2, 3), keepdim=True)
    return (x - mean) * c + mean


def elastic_transform(x, severity, gen):
    alpha, sigma = ((1.5, 2.5), (2.0, 2.5), (2.5, 2.0), (3.0, 2.0), (3.5, 1.5))[severity - 1]  # pixels, smoothing
    n, _, h, w = x.shape
    field = torch.rand(n, 2, h, w, generator=gen).to(x) * 2 - 1
    field = gaussian_blur(field, sigma)
    field = field / field.abs().amax((1, 2, 3), keepdim=True).clamp_min(1e-8) * alpha
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, device=x.device), torch.linspace(-1, 1, w, device=x.device),
                            indexing="ij")
    grid = torch.stack([xs + field[:, 0] * 2 / (w - 1), ys + field[:, 1] * 2 / (h - 1)], -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)


def pixelate(x, severity, gen):
    factor = (0.72, 0.58, 0.43, 0.32, 0.25)[severity - 1]  # 28 px -> 20, 16, 12, 9, 7 (no clean 2x step)
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, round(h * factor)), max(1, round(w * factor))), mode="area")
    return F.interpolate(small, size=(h, w), mode="nearest")


def jpeg_compression(x, severity, gen):
    from PIL import Image

    quality = (25, 18, 15, 10, 7)[severity - 1]
    arrays = (x.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    out = []
    for a in arrays:
        im = Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=quality)
        back = np.asarray(Image.open(io.BytesIO(buf.getvalue())), dtype=np.uint8)
        out.append(back[None] if back.ndim == 2 else back.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(out)).to(x) / 255.0


CORRUPTIONS = {
    "gaussian_noise": gaussian_noise, "shot_noise": shot_noise, "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur, "glass_blur": glass_blur, "motion_blur": motion_blur, "zoom_blur": zoom_blur,
    "fog": fog, "frost": frost, "snow": snow,
    "brightness": brightness, "contrast": contrast, "elastic_transform": elastic_transform, "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
}
FAMILIES = {"noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
            "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
            "weather": ("fog", "frost", "snow"),
            "digital": ("brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression")}


def corrupt(images: torch.Tensor, name: str, severity: int, *, seed: int = 0) -> torch.Tensor:
    """``images`` in [-1, 1] (the package's convention) corrupted by ``name`` at ``severity`` 1..5, in [-1, 1].

    Deterministic: the same (seed, name, severity) gives the same images on every call.
    """
    if name not in CORRUPTIONS:
        raise ValueError(f"argument 'name' is {name!r}; expected one of {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"argument 'severity' must be one of 1..5, got {severity!r}")
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"argument 'images' must be [N, 1 or 3, H, W], got shape {list(images.shape)}")
    index = list(CORRUPTIONS).index(name)
    gen = streams.generator(seed, "corruption", index * 10 + severity)
    x01 = images.float().add(1).div(2).clamp(0, 1)
    out = CORRUPTIONS[name](x01, severity, gen).clamp(0, 1)
    return out.mul(2).sub(1).to(images.dtype)
