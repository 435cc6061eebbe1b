"""AugMix (Hendrycks et al., 2020) on a whole batch, each image with its own random chains.

torchvision's ``v2.AugMix`` draws one set of chains per call, so a per-image AugMix means one call per image
(~2.6 ms per 28x28 image here, more than the denoiser). This module splits AugMix in two:

- ``augmix_plan(seeds)``: every image's random choices (mixing weights, chain depths, operations, signed
  magnitudes), drawn from a generator keyed by the image's seed alone, so an image's AugMix does not depend on
  its batch, its shard or the device;
- ``apply_augmix(x, plan)``: the chains, run batch-wide: at each chain step one resampling for every geometric
  op (per-image maps) and one call per other op (per-image magnitudes). Every image gets exactly the pixels
  torchvision's AugMix gives for the same choices: ``apply_augmix_reference`` sends each (op, magnitude) group
  through torchvision's own functional ops, and the two are tested equal bit for bit.

The operation space and magnitudes are torchvision's defaults (all 13 ops, severity 3, width 3, depth 1-3,
alpha 1, bilinear, black fill).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from diffaug_fast.data.views import to_uint8, to_unit_range

SIGNED_OPS = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
              "Sharpness")
OPS = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Posterize", "Solarize", "AutoContrast",
       "Equalize", "Brightness", "Color", "Contrast", "Sharpness")
MAX_LEVEL = 10   # magnitudes are binned in 10 levels; severity s uses the first s
MAX_DEPTH = 3    # a chain has 1..3 operations


def magnitude_table(height: int, width: int) -> torch.Tensor:
    """[len(OPS), MAX_LEVEL] float64: the (unsigned) magnitude of each op at each level, torchvision's bins
    (shears up to 0.3, translations up to a third of the side, rotations up to 30 degrees, posterize 4 down to
    0 bits, solarize threshold 1 down to 0, colour factors 1 + up to 0.9; AutoContrast / Equalize take none)."""
    def levels(top: float) -> torch.Tensor:
        return torch.linspace(0.0, top, MAX_LEVEL)  # float32 like torchvision's, widened below

    rows = {"ShearX": levels(0.3), "ShearY": levels(0.3), "TranslateX": levels(width / 3.0),
            "TranslateY": levels(height / 3.0), "Rotate": levels(30.0),
            "Posterize": (4 - torch.arange(MAX_LEVEL) / ((MAX_LEVEL - 1) / 4)).round(),
            "Solarize": torch.linspace(1.0, 0.0, MAX_LEVEL), "AutoContrast": torch.zeros(MAX_LEVEL),
            "Equalize": torch.zeros(MAX_LEVEL), "Brightness": levels(0.9), "Color": levels(0.9),
            "Contrast": levels(0.9), "Sharpness": levels(0.9)}
    return torch.stack([rows[name].double() for name in OPS])


@dataclass
class AugMixPlan:
    """Every image's random choices. B images, W chains of up to MAX_DEPTH steps."""
    original_weight: torch.Tensor  # [B] float32: m, the original image's share
    chain_weights: torch.Tensor    # [B, W] float32: (1 - m) * Dirichlet weights of the chains
    depth: torch.Tensor            # [B, W] int64 in 1..MAX_DEPTH
    op: torch.Tensor               # [B, W, MAX_DEPTH] int64: index into OPS
    magnitude: torch.Tensor        # [B, W, MAX_DEPTH] float64: signed magnitude of that step


def augmix_plan(seeds: torch.Tensor, height: int, width: int, *, severity: int = 3, chains: int = 3,
                alpha: float = 1.0) -> AugMixPlan:
    """Image i's choices from one draw of uniforms of ``numpy.random.default_rng(seeds[i])``: m ~ Beta(alpha,
    alpha) and the chain weights ~ Dirichlet(alpha) (normalised Gamma(alpha) variates by the inverse CDF), per
    chain a depth uniform in 1..3, per step an op uniform over OPS, a level uniform in 0..severity-1 and, for
    signed ops, a sign with probability 1/2 each."""
    from scipy.special import gammaincinv

    if not 1 <= severity <= MAX_LEVEL:
        raise ValueError(f"augmix: severity must be in 1..{MAX_LEVEL}, got {severity}")
    if chains < 1 or alpha <= 0:
        raise ValueError(f"augmix: need chains >= 1 and alpha > 0, got chains={chains}, alpha={alpha}")
    steps = chains * MAX_DEPTH
    k = 2 + 2 * chains + 3 * steps
    u = np.array([np.random.default_rng(seed).random(k) for seed in seeds.tolist()]).reshape(len(seeds), k)
    gammas = gammaincinv(alpha, u[:, :2 + chains])
    m = gammas[:, 0] / (gammas[:, 0] + gammas[:, 1])
    w = gammas[:, 2:] / gammas[:, 2:].sum(1, keepdims=True)
    rest = u[:, 2 + chains:]
    depth = 1 + np.floor(rest[:, :chains] * MAX_DEPTH).astype(np.int64)
    op, level, flip = (rest[:, chains + i * steps:chains + (i + 1) * steps].reshape(-1, chains, MAX_DEPTH)
                       for i in range(3))
    op_t = torch.from_numpy(np.floor(op * len(OPS)).astype(np.int64))
    magnitude = magnitude_table(height, width)[op_t, torch.from_numpy(np.floor(level * severity).astype(np.int64))]
    signed = torch.tensor([name in SIGNED_OPS for name in OPS])
    magnitude = torch.where(torch.from_numpy(flip < 0.5) & signed[op_t], -magnitude, magnitude)
    m_t = torch.from_numpy(m).float()
    return AugMixPlan(original_weight=m_t, chain_weights=torch.from_numpy(w).float() * (1 - m_t).unsqueeze(1),
                      depth=torch.from_numpy(depth), op=op_t, magnitude=magnitude)


def apply_op(images: torch.Tensor, name: str, magnitude: float) -> torch.Tensor:
    """One AugMix operation on uint8 images [N, C, H, W], all with the same magnitude, through torchvision's
    functional ops with the arguments its AugMix passes (shears about the top-left corner by atan(magnitude),
    whole-pixel translations, rotations about the centre)."""
    from torchvision.transforms.v2 import functional as F

    bilinear = F.InterpolationMode.BILINEAR
    if name in ("ShearX", "ShearY"):
        degrees = math.degrees(math.atan(magnitude))
        shear = [degrees, 0.0] if name == "ShearX" else [0.0, degrees]
        return F.affine(images, angle=0.0, translate=[0, 0], scale=1.0, shear=shear, interpolation=bilinear,
                        center=[0, 0])
    if name in ("TranslateX", "TranslateY"):
        shift = [int(magnitude), 0] if name == "TranslateX" else [0, int(magnitude)]
        return F.affine(images, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0], interpolation=bilinear)
    if name == "Rotate":
        return F.rotate(images, angle=magnitude, interpolation=bilinear)
    if name == "Posterize":
        return F.posterize(images, bits=int(magnitude))
    if name == "Solarize":
        return F.solarize(images, threshold=255.0 * magnitude)
    if name == "AutoContrast":
        return F.autocontrast(images)
    if name == "Equalize":
        return F.equalize(images)
    factor = 1.0 + magnitude
    adjust = {"Brightness": F.adjust_brightness, "Color": F.adjust_saturation, "Contrast": F.adjust_contrast,
              "Sharpness": F.adjust_sharpness}[name]
    return adjust(images, factor)


GEOMETRIC = OPS[:5]  # ShearX, ShearY, TranslateX, TranslateY, Rotate


def _inverse_affine(names: list[str], mags: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[N, 2, 3] float64: for each image, the map from an output pixel to the input pixel it reads, in pixel
    coordinates centred on the image. Shears act about the top-left corner (x -> x - m y for ShearX, as
    torchvision shears), translations move by whole pixels, rotations turn counter-clockwise about the centre."""
    theta = torch.zeros(len(names), 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    corner = torch.tensor([-width / 2, -height / 2], dtype=torch.float64)
    for i, (name, m) in enumerate(zip(names, mags.tolist())):
        if name == "ShearX":  # input x = x + m (y - cy), m through degrees and back as torchvision rounds it
            theta[i, 0, 1] = math.tan(math.radians(math.degrees(math.atan(m))))
        elif name == "ShearY":
            theta[i, 1, 0] = math.tan(math.radians(math.degrees(math.atan(m))))
        elif name == "TranslateX":
            theta[i, 0, 2] = -float(int(m))
        elif name == "TranslateY":
            theta[i, 1, 2] = -float(int(m))
        else:  # Rotate
            r = math.radians(-(m % 360))
            theta[i, :, :2] = torch.tensor([[math.cos(r), math.sin(r)], [-math.sin(r), math.cos(r)]],
                                           dtype=torch.float64)
        if name.startswith("Shear"):  # about the corner: input = c + A (out - c)
            theta[i, :, 2] = corner - theta[i, :, :2] @ corner
    return theta


def _warp(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Bilinear resampling of uint8 images through per-image inverse maps, black outside, rounded."""
    n, _, h, w = images.shape
    # float32 pixel centres times the float32 map, as torchvision builds its grid: the same samples to the last bit
    ys, xs = torch.meshgrid(torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, h),
                            torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, w), indexing="ij")
    pixels = torch.stack([xs, ys, torch.ones_like(xs)], -1).view(1, h * w, 3).expand(n, -1, -1)
    scaled = theta.float().transpose(1, 2) / torch.tensor([0.5 * w, 0.5 * h])
    grid = pixels.bmm(scaled).view(n, h, w, 2).to(images.device)
    out = torch.nn.functional.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros",
                                          align_corners=False)
    return out.round_().to(torch.uint8)


def _blend(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor * image + (1 - factor) * other per image, clamped to [0, 255] and truncated (torchvision's blend)."""
    r = factor.view(-1, 1, 1, 1).to(images.device)
    out = images.float().mul_(r.float()).addcmul_(other.expand_as(images), (1 - r).float())
    return out.clamp_(0, 255).to(torch.uint8)


def _sharpen(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with a 3x3 smoothing (centre weight 5/13, the rest 1/13, rounded) inside the 1-pixel border."""
    c = images.shape[1]
    kernel = torch.full((3, 3), 1 / 13, device=images.device)
    kernel[1, 1] = 5 / 13
    x = images.float()
    smooth = torch.nn.functional.conv2d(x, kernel.expand(c, 1, 3, 3), groups=c).round_()
    out = x.clone()
    r = (1 - factor).view(-1, 1, 1, 1).float().to(images.device)
    out[..., 1:-1, 1:-1] += r * (smooth - x[..., 1:-1, 1:-1])
    return out.clamp_(0, 255).to(torch.uint8)


def _grey(images: torch.Tensor) -> torch.Tensor:
    """Luma of RGB images (ITU-R 601-2), floored, as torchvision computes it for uint8 images; grey images as they are."""
    if images.shape[1] == 1:
        return images.float()
    r, g, b = images.unbind(1)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).floor_().unsqueeze(1)


def apply_ops(images: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """Image i through operation OPS[op[i]] at magnitude[i], batched: one resampling for every geometric op,
    one call per other op with per-image magnitudes. Equals ``apply_op`` image by image, bit for bit (tested)."""
    out = images.clone()
    dev = images.device
    names = [OPS[i] for i in op.tolist()]

    def where(*wanted):
        return torch.tensor([n in wanted for n in names], dtype=torch.bool)

    geo = where(*GEOMETRIC)
    if geo.any():
        idx = geo.nonzero().squeeze(1)
        out[idx.to(dev)] = _warp(images[idx.to(dev)], _inverse_affine([names[i] for i in idx.tolist()],
                                                                     magnitude[idx], *images.shape[-2:]))
    for name in ("Posterize", "Solarize", "AutoContrast", "Equalize", "Brightness", "Color", "Contrast",
                 "Sharpness"):
        sel = where(name)
        if not sel.any():
            continue
        idx = sel.nonzero().squeeze(1).to(dev)
        x, m = images[idx], magnitude[sel].to(dev)
        if name == "Posterize":
            keep = (255 - ((1 << (8 - m.long())) - 1)).to(torch.uint8)  # the top `bits` bits
            out[idx] = x & keep.view(-1, 1, 1, 1)
        elif name == "Solarize":
            out[idx] = torch.where(x.float() >= (255.0 * m).float().view(-1, 1, 1, 1), 255 - x, x)
        elif name in ("AutoContrast", "Equalize"):
            out[idx] = apply_op(x, name, 0.0)
        elif name == "Brightness":
            out[idx] = x.float().mul_((1 + m).float().view(-1, 1, 1, 1)).clamp_(0, 255).to(torch.uint8)
        elif name == "Color":
            out[idx] = x if x.shape[1] == 1 else _blend(x, _grey(x), 1 + m)
        elif name == "Contrast":
            out[idx] = _blend(x, _grey(x).mean((1, 2, 3), keepdim=True), 1 + m)
        else:
            out[idx] = _sharpen(x, 1 + m)
    return out


def _mix(x: torch.Tensor, plan: AugMixPlan, step) -> torch.Tensor:
    """m * image + sum_k w_k * chain_k(image) in float32, truncated back to uint8; ``step(aug, active, op,
    magnitude)`` runs one chain step on the active images."""
    if x.dtype != torch.uint8 or x.dim() != 4:
        raise ValueError(f"augmix: images must be uint8 [B, C, H, W], got {x.dtype} {tuple(x.shape)}")
    if len(plan.depth) != len(x):
        raise ValueError(f"augmix: the plan is for {len(plan.depth)} images, got {len(x)}")
    dev = x.device
    shape = (len(x), 1, 1, 1)
    mix = plan.original_weight.to(dev).view(shape) * x
    for k in range(plan.depth.shape[1]):
        aug = x.clone()
        for depth in range(MAX_DEPTH):
            active = plan.depth[:, k] > depth
            if active.any():
                step(aug, active, plan.op[:, k, depth], plan.magnitude[:, k, depth])
        mix.add_(plan.chain_weights[:, k].to(dev).view(shape) * aug)
    return mix.to(torch.uint8)


def apply_augmix(x: torch.Tensor, plan: AugMixPlan) -> torch.Tensor:
    """uint8 images [B, C, H, W] through their planned chains (``apply_ops``), mixed as torchvision's AugMix
    mixes: float m * image + sum_k w_k * chain_k(image), truncated back to uint8."""
    def step(aug, active, op, magnitude):
        idx = active.nonzero().squeeze(1)
        aug[idx.to(aug.device)] = apply_ops(aug[idx.to(aug.device)], op[idx], magnitude[idx])

    return _mix(x, plan, step)


def apply_augmix_reference(x: torch.Tensor, plan: AugMixPlan) -> torch.Tensor:
    """``apply_augmix`` through torchvision's own ops: at each step the images sharing (op, magnitude) go through
    ``apply_op`` together. Slower (one call per group); the fast path is tested against it."""
    def step(aug, active, op, magnitude):
        for key in torch.unique(torch.stack([op.double(), magnitude], 1)[active], dim=0).tolist():
            idx = (active & (op == key[0]) & (magnitude == key[1])).nonzero().squeeze(1).to(aug.device)
            aug[idx] = apply_op(aug[idx], OPS[int(key[0])], key[1])

    return _mix(x, plan, step)


def augmix(x: torch.Tensor, seeds: torch.Tensor, severity: int = 3) -> torch.Tensor:
    """AugMix per image, image i's choices from ``seeds[i]`` (``augmix_plan``); uint8 images give uint8,
    images in [-1, 1] give images in [-1, 1]. Runs on x's device."""
    out = apply_augmix(to_uint8(x), augmix_plan(seeds.cpu(), x.shape[-2], x.shape[-1], severity=severity))
    if x.dtype == torch.uint8:
        return out
    return to_unit_range(out)
