"""The in-kernel noise: Philox4x32-10 + Box-Muller, identical on every backend and equal to tl.randn."""
import numpy as np
import pytest
import torch
from scipy import stats

from diffaug_fast.ops import diffuse, reference

from conftest import FAST


def _words(*counter_and_key):
    t = lambda v: torch.tensor([v], dtype=torch.int64)  # noqa: E731
    c0, c1, c2, c3, k0, k1 = counter_and_key
    return [int(w) for w in reference.philox4x32_10(t(c0), t(c1), t(c2), t(c3), k0, k1)]


def test_reference_philox_matches_random123_known_answers():
    # Known-answer vectors published with Random123 for philox4x32-10.
    assert _words(0, 0, 0, 0, 0, 0) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    m = 0xFFFFFFFF
    assert _words(m, m, m, m, m, m) == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]
    assert _words(0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344, 0xA4093822, 0x299F31D0) == [
        0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**40 + 17])
def test_reference_stream_is_tritons_tl_randn(seed):
    pytest.importorskip("triton")
    from diffaug_fast.ops.triton.kernels import random_normal

    device = "cuda" if torch.cuda.is_available() else "cpu"
    offsets = torch.cat([torch.arange(0, 3000, 7), torch.arange(2**32 - 50, 2**32 + 50)]).to(device)
    ours = reference.philox_normal(seed, offsets)
    torch.testing.assert_close(random_normal(seed, offsets), ours, atol=1e-5, rtol=1e-5)


def _noise(device, backend, shape, seed=7, offset=0, memory_format=torch.contiguous_format):
    x0 = torch.zeros(shape, device=device).contiguous(memory_format=memory_format)
    ones = torch.ones(shape[0], device=device)
    return diffuse(x0, ones, ones, seed=seed, offset=offset, backend=backend)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 5, 7, 9), (4, 3, 16, 16), (5, 11)])
def test_same_seed_same_noise_on_every_backend(device_backend, shape):
    device, backend = device_backend
    ref = reference.noise_like(torch.empty(shape), 99, 12)
    got = _noise(device, backend, shape, seed=99, offset=12).cpu()
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_noise_does_not_depend_on_memory_format(device_backend):
    device, backend = device_backend
    a = _noise(device, backend, (2, 3, 5, 4))
    b = _noise(device, backend, (2, 3, 5, 4), memory_format=torch.channels_last)
    assert b.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_offset_shifts_the_stream(device_backend):
    device, backend = device_backend
    whole = _noise(device, backend, (1, 300), offset=0).flatten()
    shifted = _noise(device, backend, (1, 200), offset=100).flatten()
    torch.testing.assert_close(shifted, whole[100:], atol=1e-6, rtol=0)


def test_different_seeds_and_offsets_give_different_noise(device_backend):
    device, backend = device_backend
    base = _noise(device, backend, (4, 1000), seed=1, offset=0)
    for other in (_noise(device, backend, (4, 1000), seed=2, offset=0),
                  _noise(device, backend, (4, 1000), seed=1, offset=4000)):
        assert (base - other).abs().mean() > 0.5
        assert abs(np.corrcoef(base.flatten().cpu(), other.flatten().cpu())[0, 1]) < 0.05


def test_noise_is_standard_normal_and_independent_across_examples():
    backend = next((b for d, b in FAST if b == "cpu"), "reference")
    n = _noise("cpu", backend, (8, 50_000), seed=2024).double()
    flat = n.flatten().numpy()
    assert abs(flat.mean()) < 0.01 and abs(flat.var() - 1) < 0.01
    assert stats.kstest(flat[:100_000], "norm").pvalue > 1e-3
    corr = np.corrcoef(n.numpy())  # 8 examples x 8 examples
    off_diag = corr[~np.eye(8, dtype=bool)]
    assert np.abs(off_diag).max() < 0.03
    lag1 = np.corrcoef(flat[:-1], flat[1:])[0, 1]  # neighbouring counters
    assert abs(lag1) < 0.01
