"""Batched AugMix: every operation gives torchvision's pixels image by image, the fast batched chains equal the
reference (torchvision's ops per (op, magnitude) group) bit for bit on grey and RGB images of odd sizes, and
the random plan follows AugMix's distributions (checked against SciPy's)."""
import numpy as np
import pytest
import scipy.stats
import torch

from diffaug_fast.data import load_fashion_mnist
from diffaug_fast.train.augmix import (MAX_DEPTH, OPS, SIGNED_OPS, apply_augmix, apply_augmix_reference, apply_op,
                                       apply_ops, augmix, augmix_plan, magnitude_table)


@pytest.fixture(scope="module")
def fmnist_uint8():
    x = load_fashion_mnist("test", limit=96)[0]
    return ((x + 1) * 127.5).round().to(torch.uint8)


def _rgb(n, h, w, seed=0):
    """Smooth-ish random colour images: uniform noise would hide errors in sharpness and contrast."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, max(h // 3, 1), max(w // 3, 1), generator=g)
    return (torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear") * 255).round().to(torch.uint8)


def _magnitudes(op: int, n: int, h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mags = magnitude_table(h, w)[op, torch.randint(0, 3, (n,), generator=g)]
    if OPS[op] in SIGNED_OPS:
        mags = mags * torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).double()
    return mags


@pytest.mark.parametrize("name", OPS)
def test_each_op_is_torchvisions_augmix_op(fmnist_uint8, name):
    """``apply_op`` (the reference) equals the op torchvision's AugMix applies for the same choice (its
    per-image method, private API: pinned torchvision), and the batched ``apply_ops`` equals ``apply_op``."""
    from torchvision.transforms import v2

    tv = v2.AugMix()
    op = OPS.index(name)
    for images in (fmnist_uint8[:40], _rgb(24, 13, 17)):
        h, w = images.shape[-2:]
        mags = _magnitudes(op, len(images), h, w, seed=op)
        expected = torch.stack([tv._apply_image_or_video_transform(images[i], name, float(mags[i]),
                                                                   interpolation=v2.InterpolationMode.BILINEAR,
                                                                   fill=tv._fill) for i in range(len(images))])
        reference = torch.stack([apply_op(images[i:i + 1], name, float(mags[i]))[0] for i in range(len(images))])
        assert torch.equal(reference, expected), name
        assert torch.equal(apply_ops(images, torch.full((len(images),), op), mags), expected), name


@pytest.mark.parametrize("shape", [(96, 1, 28, 28), (1, 1, 28, 28), (7, 3, 13, 17), (5, 3, 32, 32)])
def test_fast_chains_equal_the_reference(fmnist_uint8, shape):
    n, c, h, w = shape
    x = fmnist_uint8[:n] if (c, h, w) == (1, 28, 28) else _rgb(n, h, w, seed=n)
    plan = augmix_plan(torch.arange(n) * 7919 + 3, h, w)
    fast = apply_augmix(x, plan)
    assert fast.dtype == torch.uint8 and fast.shape == x.shape
    assert torch.equal(fast, apply_augmix_reference(x, plan))
    assert not torch.equal(fast, x)


def test_non_contiguous_input_and_float_images(fmnist_uint8):
    x = fmnist_uint8[:16]
    seeds = torch.arange(16) + 100
    transposed = x.transpose(2, 3)  # a non-contiguous view
    assert not transposed.is_contiguous()
    assert torch.equal(augmix(transposed, seeds), augmix(transposed.contiguous(), seeds))
    # images in [-1, 1] go through the same uint8 AugMix and come back in [-1, 1]
    as_float = x.float().div(127.5).sub(1)
    out = augmix(as_float, seeds)
    assert out.dtype == torch.float32 and out.min() >= -1 and out.max() <= 1
    assert torch.equal(((out + 1) * 127.5).round().to(torch.uint8), augmix(x, seeds))


def test_an_images_augmix_depends_only_on_its_seed(fmnist_uint8):
    x, seeds = fmnist_uint8[:12], torch.arange(12) * 31 + 5
    whole = augmix(x, seeds)
    assert torch.equal(augmix(x[5:9], seeds[5:9]), whole[5:9])
    assert torch.equal(augmix(x.flip(0), seeds.flip(0)), whole.flip(0))
    assert not torch.equal(augmix(x, seeds + 1), whole)


def test_plan_follows_augmixs_distributions():
    """Beta / Dirichlet weights against SciPy's distributions (KS), ops, levels, depths and signs uniform (chi²)."""
    n = 4000
    seeds = torch.arange(n) + 10_000
    for alpha in (1.0, 0.5):
        plan = augmix_plan(seeds, 28, 28, alpha=alpha)
        m = plan.original_weight.double().numpy()
        assert scipy.stats.kstest(m, scipy.stats.beta(alpha, alpha).cdf).pvalue > 1e-3
        # a chain's Dirichlet weight is Beta(alpha, (chains - 1) alpha); here it is scaled by (1 - m)
        chains = plan.chain_weights.double()
        kept = chains.sum(1) > 0  # (1 - m) can round to 0 in float32 when alpha < 1
        w = (chains[kept, 0] / chains[kept].sum(1)).numpy()
        assert scipy.stats.kstest(w, scipy.stats.beta(alpha, 2 * alpha).cdf).pvalue > 1e-3
        total = plan.original_weight.double() + plan.chain_weights.double().sum(1)
        assert torch.allclose(total, torch.ones(n, dtype=torch.float64), atol=1e-6)
    counts = lambda t, k: np.bincount(t.reshape(-1).numpy(), minlength=k)  # noqa: E731
    assert scipy.stats.chisquare(counts(plan.op, len(OPS))).pvalue > 1e-3
    assert scipy.stats.chisquare(counts(plan.depth - 1, MAX_DEPTH)).pvalue > 1e-3
    rotate = plan.magnitude[plan.op == OPS.index("Rotate")]
    assert sorted(set(rotate.abs().round(decimals=3).tolist())) == pytest.approx([0.0, 3.333, 6.667], abs=1e-3)
    assert 0.45 < float((rotate < 0).double().sum() / (rotate != 0).sum()) < 0.55
    unsigned = plan.magnitude[plan.op == OPS.index("Solarize")]
    assert (unsigned > 0).all()  # thresholds are never negated


def test_bad_arguments_are_named(fmnist_uint8):
    with pytest.raises(ValueError, match="severity must be in 1..10"):
        augmix_plan(torch.arange(3), 28, 28, severity=11)
    with pytest.raises(ValueError, match="alpha > 0"):
        augmix_plan(torch.arange(3), 28, 28, alpha=0)
    plan = augmix_plan(torch.arange(3), 28, 28)
    with pytest.raises(ValueError, match="must be uint8"):
        apply_augmix(fmnist_uint8[:3].float(), plan)
    with pytest.raises(ValueError, match="plan is for 3 images, got 4"):
        apply_augmix(fmnist_uint8[:4], plan)
    assert augmix(fmnist_uint8[:0], torch.arange(0)).shape == (0, 1, 28, 28)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_augmix_on_cuda_equals_cpu(fmnist_uint8):
    seeds = torch.arange(64) + 1
    assert torch.equal(augmix(fmnist_uint8[:64].cuda(), seeds).cpu(), augmix(fmnist_uint8[:64], seeds))
