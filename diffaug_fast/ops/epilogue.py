"""Op ``denoise_epilogue``: a denoiser's raw output -> x0 estimate, in one pass."""
from __future__ import annotations

from typing import Optional

import torch

from diffaug_fast.ops import checks as _checks
from diffaug_fast.ops import reference
from diffaug_fast.ops.backends import run_op
from diffaug_fast.ops.layout import PARAMETRIZATIONS
from diffaug_fast.ops.plan import BatchLayout, canonical_input, register_fake_and_autograd

_FN = "denoise_epilogue"


def denoise_epilogue(x_t: torch.Tensor, model_out: torch.Tensor, a, s, *, parametrization: str = "eps",
                     clip: float | bool | None = None, learn_sigma: bool = False, backend: str | None = None):
    """x0 estimate from a denoiser's output, for ``x_t = a*x0 + s*eps``.

    Args:
        x_t: noisy images ``[B, C, ...]``.
        model_out: the network output: ``[B, C, ...]``, or ``[B, 2C, ...]`` with ``learn_sigma=True``
            (the first C channels are read in place, the variance half is ignored).
        a, s: ``[B]`` coefficients of ``x_t`` (VE diffusion: ``a = 1``, ``s = sigma``).
        parametrization: what the network predicts: 'eps', 'v', 'x0' or 'score' (∇log p(x_t)).
        clip: clamp x0 to ``[-clip, clip]`` (``True`` means 1.0, the image range); None: no clamp.
        backend: see :func:`diffaug_fast.ops.diffuse`.

    Returns x0 in ``x_t``'s dtype and memory format. Differentiable in ``x_t`` and ``model_out``.
    """
    _checks.check_tensor(_FN, "x_t", x_t)
    _checks.check_tensor(_FN, "model_out", model_out)
    _checks.check_same_device(_FN, "x_t", x_t, model_out=model_out)
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(f"{_FN}(): argument 'parametrization' is {parametrization!r}; "
                         f"expected one of {', '.join(PARAMETRIZATIONS)}")
    _checks.check_model_output(_FN, x_t, model_out, learn_sigma)
    if learn_sigma:
        model_out = model_out.narrow(1, 0, x_t.shape[1])  # a view: the kernels read it through strides
    clip = _checks.clip_limit(_FN, clip)
    batch = x_t.shape[0]
    a = _checks.per_example(_FN, "a", a, batch, x_t.device)
    s = _checks.per_example(_FN, "s", s, batch, x_t.device)
    _checks.check_coefficients(_FN, a, s, a_nonzero=parametrization in ("eps", "score"))
    param = PARAMETRIZATIONS[parametrization]
    return run_op("denoise_epilogue", backend, x_t.device, x_t, model_out, a, s, param, clip)


@torch.library.custom_op("diffaug_fast::denoise_epilogue_triton", mutates_args=())
def _denoise_epilogue_triton(x_t: torch.Tensor, model_out: torch.Tensor, a: torch.Tensor, s: torch.Tensor,
                             parametrization: int, clip: Optional[float]) -> torch.Tensor:
    from diffaug_fast.ops.triton import kernels

    x_t = canonical_input(x_t)
    layout = BatchLayout.of(x_t)
    return kernels.denoise_epilogue(x_t, layout.as_blocks(model_out), a.contiguous(), s.contiguous(),
                                    parametrization, clip, layout)


def _fake(x_t, model_out, a, s, parametrization, clip):
    return BatchLayout.of(canonical_input(x_t)).empty_like(x_t)


def _setup_context(ctx, inputs, output):
    x_t, model_out, a, s, parametrization, clip = inputs
    ctx.parametrization, ctx.clip = parametrization, clip
    ctx.save_for_backward(x_t if clip is not None else None, model_out if clip is not None else None, a, s)


def _backward(ctx, grad):
    x_t, model_out, a, s = ctx.saved_tensors
    alpha, beta = reference.x0_affine(ctx.parametrization, a, s)
    shape = (-1,) + (1,) * (grad.dim() - 1)
    g = grad.to(torch.float32)
    if ctx.clip is not None:  # clamp passes the gradient where the unclamped value was inside the range
        raw = alpha.view(shape) * x_t.to(torch.float32) + beta.view(shape) * model_out.to(torch.float32)
        g = g * (raw.abs() <= ctx.clip)
    grad_xt = (g * alpha.view(shape)).to(grad.dtype)
    grad_out = (g * beta.view(shape)).to(grad.dtype)
    return grad_xt, grad_out, None, None, None, None


register_fake_and_autograd(["diffaug_fast::denoise_epilogue_triton", "diffaug_fast::denoise_epilogue"], _fake, _backward, _setup_context)
