"""torch.library.opcheck on every op registered under torch.ops.diffaug_fast: schema (no hidden mutation or
aliasing), fake impl against the real one, autograd registration, and AOT dispatch with dynamic shapes.

Small shapes; float32 in NCHW and channels-last (the fake impls must reproduce the memory format), bfloat16 in
NCHW. The *_triton ops run under TRITON_INTERPRET=1 on CPU. Each opcheck costs about a second (it traces the op
with AOT autograd), so the cases are few.
"""
import pytest
import torch

from diffaug_fast.diffusion import linear_vp, step_coefficients
from diffaug_fast.ops import available_backends, extension, layout  # importing diffaug_fast.ops registers every op's fake and autograd

# (dtype, memory format) combinations
FP32, FP32_CL, BF16 = (torch.float32, "nchw"), (torch.float32, "channels_last"), (torch.bfloat16, "nchw")
CASES = [FP32, FP32_CL, BF16]
CASE_IDS = ["fp32", "fp32-cl", "bf16"]


BACKENDS = [b for b in available_backends("cpu") if b != "reference"]  # the registered custom ops
SLOW = pytest.mark.slow  # the learned-variance guided_step cases take 5-7 s each on CPU


def _op(name: str, backend: str):
    return getattr(torch.ops.diffaug_fast, f"{name}_triton" if backend == "triton" else name).default


def _images(shape, dtype, fmt, seed, *, requires_grad=False, count=1):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        t = torch.randn(shape, generator=g).to(dtype)
        if fmt == "channels_last":
            t = t.contiguous(memory_format=torch.channels_last)
        out.append(t.requires_grad_(requires_grad))
    return out


def _per_example(batch, seed, low=0.2, high=0.9):
    g = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(batch, generator=g)


def _check(op, args):
    torch.library.opcheck(op, args)  # raises OpCheckError naming the failed check


def test_every_registered_op_is_checked():
    """The ops below are all there is under diffaug_fast:: (a new op needs its opcheck case here)."""
    names = {"diffuse", "denoise_epilogue", "guided_step", "dual_fusion"}
    registered = {name.split("::", 1)[1] for name in torch._C._dispatch_get_all_op_names()
                  if name.startswith("diffaug_fast::")}
    triton_ops = {f"{n}_triton" for n in names}
    assert registered == (names | triton_ops if extension.has_extension() else triton_ops)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype, fmt", CASES, ids=CASE_IDS)
def test_diffuse(backend, dtype, fmt):
    op = _op("diffuse", backend)
    x0, noise = _images((2, 3, 4, 5), dtype, fmt, 0, requires_grad=True, count=2)
    a, s = _per_example(2, 1), _per_example(2, 2)
    _check(op, (x0, a, s, None, 7, 3, True))
    _check(op, (x0, a, s, None, 7, 3, False))
    _check(op, (x0, a, s, noise, 7, 3, False))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype, fmt", CASES, ids=CASE_IDS)
def test_denoise_epilogue(backend, dtype, fmt):
    op = _op("denoise_epilogue", backend)
    x_t, out = _images((2, 3, 4, 5), dtype, fmt, 0, requires_grad=True, count=2)
    a, s = _per_example(2, 1), _per_example(2, 2)
    names = list(layout.PARAMETRIZATIONS) if (dtype, fmt) == FP32 else ["eps", "score"]
    for k, name in enumerate(names):
        _check(op, (x_t, out, a, s, layout.PARAMETRIZATIONS[name], 1.0 if k % 2 == 0 else None))


@pytest.mark.parametrize("backend", BACKENDS)
def test_denoise_epilogue_learn_sigma_half(backend):
    """A learn_sigma output's first half is read through strides: a non-contiguous view as input."""
    x_t, = _images((2, 3, 4, 5), torch.float32, "nchw", 0, requires_grad=True)
    out, = _images((2, 6, 4, 5), torch.float32, "nchw", 1, requires_grad=True)
    _check(_op("denoise_epilogue", backend), (x_t, out.narrow(1, 0, 3), _per_example(2, 1), _per_example(2, 2),
                                              layout.EPS, None))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype, fmt, mode, learned", [
    (*FP32, "ddpm", False), pytest.param(*FP32, "ddpm", True, marks=SLOW), (*FP32, "ddim", False),
    pytest.param(*FP32_CL, "ddpm", True, marks=SLOW), (*FP32_CL, "ddim", False), (*BF16, "ddpm", False),
    (*BF16, "ddim", False), (*FP32, "ddim_clip_after_shift", False), (*BF16, "ddim_clip_after_shift", False)],
    ids=["fp32-ddpm", "fp32-ddpm-learned", "fp32-ddim", "fp32-cl-ddpm-learned", "fp32-cl-ddim", "bf16-ddpm",
         "bf16-ddim", "fp32-ddim-clip-after-shift", "bf16-ddim-clip-after-shift"])
def test_guided_step(backend, dtype, fmt, mode, learned):
    op = _op("guided_step", backend)
    x_t, eps, grad, noise = _images((2, 3, 4, 5), dtype, fmt, 0, requires_grad=True, count=4)
    var = _images((2, 3, 4, 5), dtype, fmt, 1, requires_grad=True)[0] if learned else None
    with torch.no_grad():
        if var is not None:
            var.tanh_()
    code = layout.STEP_MODES.get(mode, layout.DDIM_GUIDANCE.get(mode.removeprefix("ddim_")))
    mode = "ddim" if code in layout.DDIM_CODES else mode
    coef = step_coefficients(linear_vp(100), [60, 5], mode=mode, eta=0.5, variance="learned" if learned else
                             "fixed_small")
    _check(op, (x_t, eps, var, grad, coef, None, code, 1.5, None, 11, 2))
    _check(op, (x_t, eps, var, None, coef, noise, code, 0.0, 1.0, 11, 2))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("concat", [True, False], ids=["concat", "sum"])
@pytest.mark.parametrize("dtype, fmt", CASES, ids=CASE_IDS)
def test_dual_fusion(backend, dtype, fmt, concat):
    op = _op("dual_fusion", backend)
    x_t, x0 = _images((2, 3, 4, 5), dtype, fmt, 0, requires_grad=True, count=2)
    g = torch.Generator().manual_seed(3)
    w_t, w_0 = torch.rand(2, 3, generator=g).requires_grad_(), torch.rand(2, 3, generator=g).requires_grad_()
    _check(op, (x_t, x0, w_t, w_0, concat))
    if (dtype, fmt) == FP32:  # feature vectors [B, D]
        h_t, h_0 = _images((2, 3), dtype, "nchw", 1, requires_grad=True, count=2)
        _check(op, (h_t, h_0, w_t, w_0, concat))
