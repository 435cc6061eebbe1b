"""What a classifier sees of one source image: uint8 [C, S, S] (converted to [-1, 1] on the device).

* ``fit``: the centre square resized to S (bicubic): how small data sets are read; a no-op for in-memory images
  already of that size.
* ``resized_crop``: torchvision's RandomResizedCrop (area 8-100 %, aspect 3/4-4/3, bilinear) + horizontal flip,
  drawn from a keyed generator: the ImageNet training view.
* ``center``: the shorter side resized to S·256/224, then the centre S×S: the ImageNet evaluation view (and the
  official DiffAug branch's view).
"""
from __future__ import annotations

import math

import numpy as np
import torch

RESIZE_RATIO = 256 / 224  # Resize(256) + CenterCrop(224)
VIEWS = ("fit", "resized_crop", "center")


def _pil(image, channels: int):
    """A PIL image in the requested mode ("L" or "RGB"), from a PIL image or a uint8 [C, H, W] tensor."""
    from PIL import Image

    if isinstance(image, torch.Tensor):
        arr = image.numpy()
        image = Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0))
    return image.convert("L" if channels == 1 else "RGB")


def _array(image) -> torch.Tensor:
    arr = np.array(image, dtype=np.uint8)  # a copy: PIL's buffer is read-only
    return torch.from_numpy(np.ascontiguousarray(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)))


def _native(image, size: int, channels: int) -> bool:
    return isinstance(image, torch.Tensor) and tuple(image.shape) == (channels, size, size)


def fit(image, size: int, channels: int) -> torch.Tensor:
    """Centre square, bicubic resize to ``size``: keeps the aspect ratio of the content."""
    from PIL import Image

    if _native(image, size, channels):
        return image
    im = _pil(image, channels)
    side = min(im.size)
    left, top = (im.width - side) // 2, (im.height - side) // 2
    im = im.crop((left, top, left + side, top + side))
    if im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.BICUBIC)
    return _array(im)


def center(image, size: int, channels: int) -> torch.Tensor:
    """Shorter side to round(size·256/224), then the centre size×size (bilinear, as torchvision's Resize)."""
    from PIL import Image

    im = _pil(image, channels)
    short = round(size * RESIZE_RATIO)
    if im.width <= im.height:  # torchvision's Resize(int): the long side truncated, not rounded
        w, h = short, int(short * im.height / im.width)
    else:
        w, h = int(short * im.width / im.height), short
    im = im.resize((w, h), Image.Resampling.BILINEAR)
    left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))  # CenterCrop's offsets
    return _array(im.crop((left, top, left + size, top + size)))


def resized_crop_box(width: int, height: int, generator: torch.Generator, scale=(0.08, 1.0),
                     ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(left, top, w, h) as torchvision's RandomResizedCrop.get_params draws it, from ``generator``."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = torch.rand(2, generator=generator, dtype=torch.float64)
        target = area * (scale[0] + (scale[1] - scale[0]) * float(u[0]))
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * float(u[1]))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return left, top, w, h
    aspect = width / height  # fallback: the whole image, clamped to the ratio range, centred
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def resized_crop(image, size: int, channels: int, generator: torch.Generator) -> torch.Tensor:
    """RandomResizedCrop(size) + RandomHorizontalFlip, both drawn from ``generator``."""
    from PIL import Image

    im = _pil(image, channels)
    left, top, w, h = resized_crop_box(im.width, im.height, generator)
    im = im.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))
    if bool(torch.rand(1, generator=generator) < 0.5):
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return _array(im)


def view(image, name: str, size: int, channels: int, generator: torch.Generator | None = None) -> torch.Tensor:
    if name == "fit":
        return fit(image, size, channels)
    if name == "center":
        return center(image, size, channels)
    if name == "resized_crop":
        return resized_crop(image, size, channels, generator)
    raise ValueError(f"argument 'name' is {name!r}; expected one of {', '.join(VIEWS)}")


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1] (as the in-memory loaders always did: /127.5 - 1); floats pass through."""
    if x.dtype == torch.uint8:
        return x.float().div_(127.5).sub_(1.0)
    return x.float()


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255], clamped and rounded to the nearest grey level (the inverse of
    ``to_unit_range`` on its image); uint8 passes through."""
    if x.dtype == torch.uint8:
        return x
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round_().to(torch.uint8)
