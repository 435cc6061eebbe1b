"""What the end-to-end benchmarks share: the device, the embedded denoiser, real Fashion-MNIST images, timesteps."""
from __future__ import annotations

import functools

import torch

from diffaug_fast import pretrained
from diffaug_fast.data import load_fashion_mnist

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def sync():
    """Wait for the GPU's queued work (a timed call must include it)."""
    if DEVICE == "cuda":
        torch.cuda.synchronize()


@functools.lru_cache(maxsize=None)
def denoiser():
    return pretrained("fmnist", DEVICE)


@functools.lru_cache(maxsize=None)
def train_images(n):
    return load_fashion_mnist("train", limit=n)[0].to(DEVICE)


def timesteps(n, seed=0):
    return torch.randint(0, 1000, (n,), generator=torch.Generator().manual_seed(seed)).to(DEVICE)
