"""Python twin of the layout part of csrc/plan.h: how the kernels see a batch of tensors.

Each example is one contiguous block (NCHW or channels-last order) with its own
batch stride, so channels-last tensors and channel slices (the first half of a
learn_sigma output) need no copy. Used by the Triton backend and fake impls.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def is_channels_last_only(t: torch.Tensor) -> bool:
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def _examples_are_blocks(t: torch.Tensor, channels_last: bool) -> bool:
    if t.numel() == 0:
        return False
    if not channels_last:
        return t[0].is_contiguous()
    if t.dim() != 4:
        return False
    st, sz = t.stride(), t.shape
    return st[1] == 1 and st[3] == sz[1] and st[2] == sz[1] * sz[3]


@dataclass(frozen=True)
class BatchLayout:
    channels_last: bool
    batch: int
    inner: int
    channels: int
    pixels: int

    @staticmethod
    def of(t: torch.Tensor) -> "BatchLayout":
        cl = is_channels_last_only(t)
        batch = t.shape[0]
        inner = t.numel() // batch if batch else 0
        channels, pixels = (t.shape[1], t.shape[2] * t.shape[3]) if t.dim() == 4 else (1, 1)
        return BatchLayout(cl, batch, inner, channels, pixels)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def as_blocks(self, t: torch.Tensor) -> torch.Tensor:
        """t itself when its examples are blocks in this order, else a copy that is."""
        return t if _examples_are_blocks(t, self.channels_last) else t.contiguous(memory_format=self.memory_format)

    def empty_like(self, t: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(t, memory_format=self.memory_format)

    def batch_stride(self, t: torch.Tensor | None) -> int:
        if t is None or self.batch <= 1:
            return self.inner
        return t.stride(0)


def canonical_input(t: torch.Tensor) -> torch.Tensor:
    """The leading input of an op: kept when NCHW- or channels-last-contiguous, else made contiguous."""
    return t if is_channels_last_only(t) else t.contiguous()


def register_fake_and_autograd(op_names, fake, backward, setup_context) -> None:
    """Give each backend's op of one family the same fake impl and autograd formula."""
    from diffaug_fast.ops import extension as _build

    for name in op_names:
        if name.endswith("_triton") or _build.has_extension():
            torch.library.register_fake(name)(fake)
            torch.library.register_autograd(name, backward, setup_context=setup_context)
