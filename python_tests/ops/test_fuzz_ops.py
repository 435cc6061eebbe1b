"""Property-based fuzzing of the compiled CPU kernels against the reference: shapes, layouts, dtypes, keys."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffaug_fast.ops import available_backends, denoise_epilogue, diffuse

from conftest import tolerance

pytestmark = pytest.mark.skipif("cpu" not in available_backends("cpu"), reason="compiled extension not loaded")

DTYPES = st.sampled_from([torch.float32, torch.bfloat16, torch.float16])


@st.composite
def batches(draw):
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=1, max_size=4)))
    dtype = draw(DTYPES)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 2**16)))).to(dtype)
    layout = draw(st.sampled_from(["contiguous", "channels_last", "transposed"]))
    if layout == "channels_last" and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "transposed" and x.dim() >= 3:
        x = x.transpose(-1, -2)
    return x


@settings(deadline=None)  # example count: the hypothesis profile (conftest.py)
@given(x=batches(), seed=st.integers(0, 2**63 - 1), offset=st.integers(0, 2**40),
       scale=st.floats(0.0, 2.0, allow_nan=False))
def test_diffuse_matches_reference(x, seed, offset, scale):
    a = torch.linspace(0.1, 1.0, x.shape[0])
    s = torch.full((x.shape[0],), scale)
    got = diffuse(x, a, s, seed=seed, offset=offset, return_noise=True, backend="cpu")
    ref = diffuse(x, a, s, seed=seed, offset=offset, return_noise=True, backend="reference")
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, **tolerance(x.dtype))


@settings(deadline=None)  # example count: the hypothesis profile (conftest.py)
@given(x=batches(), param=st.sampled_from(["eps", "v", "x0", "score"]),
       clip=st.one_of(st.none(), st.floats(0.1, 3.0)), out_dtype=DTYPES)
def test_epilogue_matches_reference(x, param, clip, out_dtype):
    out = torch.randn(x.shape).to(out_dtype)
    a = torch.linspace(0.05, 1.0, x.shape[0])
    s = torch.linspace(0.9, 0.01, x.shape[0])
    got = denoise_epilogue(x, out, a, s, parametrization=param, clip=clip, backend="cpu")
    ref = denoise_epilogue(x, out, a, s, parametrization=param, clip=clip, backend="reference")
    torch.testing.assert_close(got, ref, **tolerance(x.dtype))


@settings(deadline=None)  # example count: the hypothesis profile (conftest.py)
@given(x=batches(), mode=st.sampled_from(["ddpm", "ddim"]), t=st.integers(0, 999), guided=st.booleans(),
       scale=st.floats(-4.0, 4.0, allow_nan=False), clip=st.one_of(st.none(), st.floats(0.5, 2.0)),
       seed=st.integers(0, 2**63 - 1), offset=st.integers(0, 2**40))
def test_guided_step_matches_reference(x, mode, t, guided, scale, clip, seed, offset):
    from diffaug_fast.diffusion import linear_vp, step_coefficients
    from diffaug_fast.ops import guided_step

    if x.dim() < 2:
        x = x.unsqueeze(-1)
    out = torch.randn(x.shape).to(x.dtype)
    grad = torch.randn(x.shape).to(x.dtype) if guided else None
    coef = step_coefficients(linear_vp(), torch.full((x.shape[0],), t), mode=mode)
    kw = dict(mode=mode, grad=grad, scale=scale, clip=clip, seed=seed, offset=offset)
    got = guided_step(x, out, coef, backend="cpu", **kw)
    ref = guided_step(x, out, coef, backend="reference", **kw)
    torch.testing.assert_close(got, ref, **tolerance(x.dtype))


@settings(deadline=None)  # example count: the hypothesis profile (conftest.py)
@given(x=batches(), concat=st.booleans(), per=st.sampled_from(["scalar", "batch", "channel"]))
def test_dual_fusion_matches_reference(x, concat, per):
    from diffaug_fast.ops import dual_fusion

    if x.dim() < 2:
        x = x.unsqueeze(-1)
    x0 = torch.randn(x.shape).to(x.dtype)
    b, c = x.shape[:2]
    w_t = {"scalar": 0.7, "batch": torch.linspace(0.1, 1.0, b), "channel": torch.rand(b, c)}[per]
    w_0 = {"scalar": -0.3, "batch": torch.linspace(1.0, 0.2, b), "channel": torch.rand(b, c)}[per]
    got = dual_fusion(x, x0, w_t, w_0, concat=concat, backend="cpu")
    ref = dual_fusion(x, x0, w_t, w_0, concat=concat, backend="reference")
    torch.testing.assert_close(got, ref, **tolerance(x.dtype))
