"""A test set that is decoded a chunk at a time: ``images[i:j]`` reads those files (in threads: PIL releases the
GIL while decoding) and gives float32 [j - i, C, S, S] in [-1, 1]. Evaluation code that walks a test set in
slices (``eval.metrics``) then holds one chunk, not 50 000 ImageNet images (30 GB as float32)."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import torch

from diffaug_fast.data.views import to_unit_range, view


class DecodedImages:
    def __init__(self, source, view_name: str, image_size: int, channels: int, threads: int | None = None):
        self.source, self.view_name = source, view_name
        self.image_size, self.channels = image_size, channels
        self.threads = threads or min(8, os.cpu_count() or 1)

    def __len__(self) -> int:
        return len(self.source)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), self.channels, self.image_size, self.image_size))

    def subset(self, idx: torch.Tensor) -> "DecodedImages":
        """Only the images at ``idx``, decoded when read like the rest."""
        return DecodedImages(self.source.subset(idx), self.view_name, self.image_size, self.channels, self.threads)

    def _one(self, i: int) -> torch.Tensor:
        return view(self.source.image(i), self.view_name, self.image_size, self.channels)

    def __getitem__(self, key):
        if isinstance(key, int):
            return to_unit_range(self._one(range(len(self))[key]))
        if not isinstance(key, slice):
            raise TypeError(f"DecodedImages takes an int or a slice, got {type(key).__name__}")
        indices = range(len(self))[key]
        with ThreadPoolExecutor(self.threads) as pool:
            return to_unit_range(torch.stack(list(pool.map(self._one, indices))))
