"""AugMix with per-image random chains: the batched ``augmix`` (plan + batch-wide ops) beside torchvision's
``v2.AugMix`` called once per image (what per-image AugMix costs without batching; the package's earlier
implementation), on Fashion-MNIST-sized grey and CIFAR-sized RGB batches.

Run:  python -m pytest benchmarks/test_bench_augmix.py --benchmark-json=benchmarks/results/augmix-<machine>.json
      python benchmarks/report_loader.py benchmarks/results/augmix-<machine>.json   (images/s side by side)
"""
from __future__ import annotations

import pytest
import torch

from diffaug_fast.train.augmix import augmix

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BATCH = 128
SHAPES = {"grey 28x28": (1, 28, 28), "RGB 32x32": (3, 32, 32)}


def per_image_torchvision(x: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """One torchvision AugMix call per image, each under its own seed (the baseline)."""
    from torchvision.transforms import v2

    op = v2.AugMix()
    out = torch.empty_like(x)
    with torch.random.fork_rng(devices=[]):
        for i in range(len(x)):
            torch.manual_seed(int(seeds[i]))
            out[i] = op(x[i])
    return out


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("impl", ["batched", "torchvision per image"])
def test_augmix(benchmark, shape, impl):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (BATCH, *SHAPES[shape]), generator=g, dtype=torch.uint8)
    seeds = torch.randint(0, 2**62, (BATCH,), generator=g)
    if impl == "batched":
        x = x.to(DEVICE)
        run = lambda: augmix(x, seeds)  # noqa: E731
    else:
        run = lambda: per_image_torchvision(x, seeds)  # noqa: E731
    run()
    benchmark.extra_info.update(task=f"AugMix {shape}, {impl}", images=BATCH,
                                device=DEVICE if impl == "batched" else "cpu")
    benchmark.pedantic(lambda: (run(), torch.cuda.synchronize() if DEVICE == "cuda" else None), rounds=5,
                       warmup_rounds=1)
