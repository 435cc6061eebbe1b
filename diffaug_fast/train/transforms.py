"""Standard augmentation on image batches in [-1, 1]: random crop with padding + horizontal flip (AugMix is
in ``diffaug_fast.train.augmix``).

Randomness is drawn for the whole (global) batch from a seeded generator and applied to any slice of
it, so a data-parallel shard gets exactly the augmentation its images would get in one process.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def crop_flip_params(n: int, generator: torch.Generator, pad: int = 2) -> torch.Tensor:
    """[n, 3] int64: row shift, column shift (0..2*pad) and flip flag per image."""
    shifts = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
    flips = (torch.rand(n, generator=generator) < 0.5).long().unsqueeze(1)
    return torch.cat([shifts, flips], 1)


def crop_flip(x: torch.Tensor, params: torch.Tensor, pad: int = 2, fill: float | None = None) -> torch.Tensor:
    """Pad by ``pad`` with ``fill`` (default black: 0 for uint8 images, -1 for images in [-1, 1]), crop back at the
    given shifts, mirror where flagged."""
    b, c, h, w = x.shape
    if fill is None:
        fill = 0 if x.dtype == torch.uint8 else -1.0
    padded = F.pad(x, (pad, pad, pad, pad), value=fill)
    rows = params[:, 0:1] + torch.arange(h)  # [b, h]
    cols = params[:, 1:2] + torch.arange(w)  # [b, w]
    cols = torch.where(params[:, 2:3].bool(), cols.flip(1), cols)
    bi = torch.arange(b).view(b, 1, 1, 1)
    ci = torch.arange(c).view(1, c, 1, 1)
    return padded[bi, ci, rows.view(b, 1, h, 1).to(x.device), cols.view(b, 1, 1, w).to(x.device)]
