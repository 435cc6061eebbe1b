"""Throughput of the fused ops against eager and compiled PyTorch, with a plain copy as the yardstick.

Run:  python -m pytest benchmarks/test_bench_ops.py --benchmark-json=benchmarks/results/ops-<machine>.json
      python benchmarks/report.py benchmarks/results/ops-<machine>.json
Each group holds one op at one shape and dtype; report.py turns medians into ratios.
The copy yardstick copies into a preallocated buffer: pure memory bandwidth, while
the ops also allocate their output (for outputs over glibc's 32 MB mmap threshold,
fresh pages are faulted in on every call).
"""
import functools

import pytest
import torch

from diffaug_fast.ops import layout as L
from diffaug_fast.ops import available_backends, denoise_epilogue, diffuse, reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FUSED = "cuda" if DEVICE == "cuda" else "cpu"
SHAPES = {"256x1x28x28": (256, 1, 28, 28), "64x3x256x256": (64, 3, 256, 256)}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _rounds(shape, impl):
    big = shape[0] * shape[1] * shape[2] * shape[3] > 1_000_000
    if impl == "eager_reference":
        return 3 if big else 10
    return 10 if big else 100


@functools.lru_cache(maxsize=None)
def _compiled(fn):
    return torch.compile(fn, fullgraph=True, dynamic=False)


def _ref_diffuse(x0, a, s):
    return reference.diffuse(x0, a, s, None, 7, 0, False)[0]


def _ref_epilogue(xt, out, a, s):
    return reference.denoise_epilogue(xt, out, a, s, reference.EPS, 1.0)


def _randn_diffuse(x0, a, s):
    # What people write without this package: torch's own generator, three passes.
    shape = (-1,) + (1,) * (x0.dim() - 1)
    return a.view(shape) * x0 + s.view(shape) * torch.randn_like(x0)


def _eager_epilogue(xt, out, a, s):
    shape = (-1,) + (1,) * (xt.dim() - 1)
    return ((xt - s.view(shape) * out) / a.view(shape)).clamp(-1, 1)


def _run(benchmark, fn, rounds, **info):
    fn()
    _sync()
    benchmark.extra_info.update(info)

    def call():
        fn()
        _sync()

    benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=1)


@pytest.mark.skipif(FUSED not in available_backends(DEVICE), reason="compiled extension not available")
# torch.compile(reference diffuse) is not a usable baseline: inductor inlines the
# 10-round Philox DAG recursively and did not finish compiling in 10 minutes
# (torch 2.14.1, CPU). The compiled baseline is the compiled idiom instead.
@pytest.mark.parametrize("impl", ["fused", "eager_reference", "eager_idiom", "compiled_idiom", "copy"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("shape", list(SHAPES))
def test_diffuse(benchmark, shape, dtype, impl):
    benchmark.group = f"diffuse {shape} {dtype}"
    x0 = torch.randn(SHAPES[shape], device=DEVICE).to(DTYPES[dtype])
    a = torch.rand(x0.shape[0], device=DEVICE)
    s = torch.rand(x0.shape[0], device=DEVICE)
    src_dst = (x0, torch.empty_like(x0))
    fn = {
        "fused": lambda: diffuse(x0, a, s, seed=7, backend=FUSED),
        "eager_reference": lambda: _ref_diffuse(x0, a, s),
        "eager_idiom": lambda: _randn_diffuse(x0, a, s),
        "compiled_idiom": lambda: _compiled(_randn_diffuse)(x0, a, s),
        "copy": lambda: src_dst[1].copy_(src_dst[0]),  # reads and writes the same bytes as diffuse
    }[impl]
    _run(benchmark, fn, _rounds(SHAPES[shape], impl), op="diffuse", impl=impl, shape=shape, dtype=dtype,
         bytes=2 * x0.numel() * x0.element_size())


@pytest.mark.skipif(FUSED not in available_backends(DEVICE), reason="compiled extension not available")
@pytest.mark.parametrize("impl", ["fused", "eager_reference", "compiled_reference", "eager_idiom", "copy"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("shape", list(SHAPES))
def test_epilogue(benchmark, shape, dtype, impl):
    benchmark.group = f"denoise_epilogue {shape} {dtype}"
    xt = torch.randn(SHAPES[shape], device=DEVICE).to(DTYPES[dtype])
    out = torch.randn_like(xt)
    a = torch.rand(xt.shape[0], device=DEVICE) + 0.1
    s = torch.rand(xt.shape[0], device=DEVICE)
    # reads 2N, writes N: the same bytes as copying 1.5N elements
    src_dst = [torch.empty(xt.numel() * 3 // 2, device=DEVICE, dtype=xt.dtype) for _ in range(2)]
    fn = {
        "fused": lambda: denoise_epilogue(xt, out, a, s, clip=1.0, backend=FUSED),
        "eager_reference": lambda: _ref_epilogue(xt, out, a, s),
        "compiled_reference": lambda: _compiled(_ref_epilogue)(xt, out, a, s),
        "eager_idiom": lambda: _eager_epilogue(xt, out, a, s),
        "copy": lambda: src_dst[1].copy_(src_dst[0]),
    }[impl]
    _run(benchmark, fn, _rounds(SHAPES[shape], impl), op="denoise_epilogue", impl=impl, shape=shape, dtype=dtype,
         bytes=3 * xt.numel() * xt.element_size())


def _columns(coef):
    # the coefficient row's columns by their names in csrc/include/diffaug_fast/layout.h
    return [coef[:, k].view(-1, 1, 1, 1) for k in range(L.STEP_COEFFICIENTS)]


def _eager_ddpm_step(x, eps, g, coef, scale):
    # guided-diffusion's p_sample + condition_mean, op by op, with torch's generator
    c = _columns(coef)
    x0 = ((x - c[L.COL_S] * eps) / c[L.COL_A]).clamp(-1, 1)
    log_var = c[L.COL_DDPM_LOG_VAR_MIN]
    mean = c[L.COL_DDPM_MEAN_X0] * x0 + c[L.COL_DDPM_MEAN_XT] * x + scale * log_var.exp() * g
    return mean + c[L.COL_DDPM_NOISE] * (0.5 * log_var).exp() * torch.randn_like(x)


def _eager_ddim_step(x, eps, g, coef, scale):
    # guided-diffusion's ddim_sample (eta = 0) + condition_score, op by op: clip x0, shift eps, x0 from the
    # shifted eps (not clipped again), eps from that x0
    c = _columns(coef)
    x0 = ((x - c[L.COL_S] * eps) / c[L.COL_A]).clamp(-1, 1)
    eps = (x - c[L.COL_A] * x0) / c[L.COL_S] - c[L.COL_S] * scale * g
    x0 = (x - c[L.COL_S] * eps) / c[L.COL_A]
    eps = (x - c[L.COL_A] * x0) / c[L.COL_S]
    return c[L.COL_DDIM_A_PREV] * x0 + c[L.COL_DDIM_DIR] * eps


@pytest.mark.skipif(FUSED not in available_backends(DEVICE), reason="compiled extension not available")
@pytest.mark.parametrize("impl", ["fused", "eager_reference", "eager_idiom", "compiled_idiom", "copy"])
@pytest.mark.parametrize("mode", ["ddpm", "ddim"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_guided_step(benchmark, shape, mode, impl):
    from diffaug_fast.diffusion import linear_vp, step_coefficients
    from diffaug_fast.ops import guided_step

    benchmark.group = f"guided_step[{mode}] {shape} fp32"
    x = torch.randn(SHAPES[shape], device=DEVICE)
    eps, g = torch.randn_like(x), torch.randn_like(x)
    coef = step_coefficients(linear_vp(), torch.randint(1, 1000, (x.shape[0],)), mode=mode, device=DEVICE)
    src_dst = [torch.empty(x.numel() * 2, device=DEVICE) for _ in range(2)]  # reads 3N, writes N
    idiom = _eager_ddpm_step if mode == "ddpm" else _eager_ddim_step
    code = reference.STEP_MODES[mode]
    fn = {
        "fused": lambda: guided_step(x, eps, coef, mode=mode, grad=g, scale=2.0, clip=1.0, seed=3, backend=FUSED),
        "eager_reference": lambda: reference.guided_step(x, eps, None, g, coef, None, code, 2.0, 1.0, 3, 0),
        "eager_idiom": lambda: idiom(x, eps, g, coef, 2.0),
        "compiled_idiom": lambda: _compiled(idiom)(x, eps, g, coef, 2.0),
        "copy": lambda: src_dst[1].copy_(src_dst[0]),
    }[impl]
    _run(benchmark, fn, _rounds(SHAPES[shape], impl), op=f"guided_step[{mode}]", impl=impl, shape=shape,
         dtype="fp32", bytes=4 * x.numel() * x.element_size())


def _concat_idiom(x, z, wt, w0):
    # what a DA classifier's forward does without the op: scale each input, then torch.cat
    return torch.cat([wt.view(-1, 1, 1, 1) * x, w0.view(-1, 1, 1, 1) * z], 1)


@pytest.mark.skipif(FUSED not in available_backends(DEVICE), reason="compiled extension not available")
@pytest.mark.parametrize("impl", ["fused", "eager_reference", "eager_idiom", "compiled_idiom", "copy"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_dual_fusion_concat(benchmark, shape, impl):
    from diffaug_fast.ops import dual_fusion

    benchmark.group = f"dual_fusion[concat] {shape} fp32"
    x = torch.randn(SHAPES[shape], device=DEVICE)
    z = torch.randn_like(x)
    wt, w0 = torch.rand(x.shape[0], device=DEVICE), torch.rand(x.shape[0], device=DEVICE)
    wt2, w02 = wt[:, None].expand(-1, x.shape[1]).contiguous(), w0[:, None].expand(-1, x.shape[1]).contiguous()
    src_dst = [torch.empty(x.numel() * 2, device=DEVICE) for _ in range(2)]  # reads 2N, writes 2N
    fn = {
        "fused": lambda: dual_fusion(x, z, wt, w0, concat=True, backend=FUSED),
        "eager_reference": lambda: reference.dual_fusion(x, z, wt2, w02, True),
        "eager_idiom": lambda: _concat_idiom(x, z, wt, w0),
        "compiled_idiom": lambda: _compiled(_concat_idiom)(x, z, wt, w0),
        "copy": lambda: src_dst[1].copy_(src_dst[0]),
    }[impl]
    _run(benchmark, fn, _rounds(SHAPES[shape], impl), op="dual_fusion[concat]", impl=impl, shape=shape,
         dtype="fp32", bytes=4 * x.numel() * x.element_size())
