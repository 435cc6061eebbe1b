"""Op ``dual_fusion``: how a denoising-assisted classifier sees x_t and x0_hat together, in one pass.

* input level (the paper's DA classifier): ``concat_inputs(x_t, x0_hat, scale_t, scale_0)`` writes
  ``[scale_t*x_t, scale_0*x0_hat]`` stacked along channels straight into the output, no ``torch.cat``;
* feature level: ``gated_fusion(h_t, h_0, gate)`` = ``gate*h_t + (1 - gate)*h_0`` with a per-example (or
  per-example-and-channel) gate, e.g. ``sigmoid(MLP(time embedding))``.
Both are ``dual_fusion(x_t, x0, w_t, w_0, concat=...)`` with per-(example, channel) weights [B, C].
Differentiable in both inputs and both weights.
"""
from __future__ import annotations

import torch

from diffaug_fast.ops import checks as _checks
from diffaug_fast.ops.plan import BatchLayout, canonical_input, register_fake_and_autograd
from diffaug_fast.ops.backends import run_op

_FN = "dual_fusion"


def _weights(name: str, w, x: torch.Tensor) -> torch.Tensor:
    """A scalar, [B] or [B, C] weight as float32 [B, C] on x's device."""
    batch, channels = x.shape[0], x.shape[1]
    if not isinstance(w, torch.Tensor):
        if isinstance(w, bool) or not isinstance(w, (int, float)):
            raise TypeError(f"{_FN}(): argument '{name}' must be a number or a tensor, got {type(w).__name__}")
        return torch.full((batch, channels), float(w), device=x.device)
    if w.device != x.device:
        raise ValueError(f"{_FN}(): argument '{name}' is on {w.device}; expected {x.device} (where x_t is)")
    if not w.is_floating_point():
        raise TypeError(f"{_FN}(): argument '{name}' has dtype {w.dtype}; expected a floating dtype")
    if w.dim() == 0:
        w = w.expand(batch)
    if w.shape == (batch,):
        w = w.unsqueeze(1).expand(batch, channels)
    if w.shape != (batch, channels):
        raise ValueError(f"{_FN}(): argument '{name}' has shape {list(w.shape)}; expected a number, [{batch}] or "
                         f"[{batch}, {channels}] (per example, or per example and channel)")
    return w.to(torch.float32)


def dual_fusion(x_t: torch.Tensor, x0: torch.Tensor, w_t, w_0, *, concat: bool, backend: str | None = None):
    """``concat``: ``[w_t*x_t, w_0*x0]`` along channels ([B, 2C, ...]); else ``w_t*x_t + w_0*x0`` ([B, C, ...]).

    Args:
        x_t, x0: ``[B, C, ...]`` tensors of the same shape (images or feature maps, ``[B, D]`` vectors too);
            the output has x_t's dtype and memory format.
        w_t, w_0: a number, ``[B]`` or ``[B, C]`` weights (computed in float32).
        backend: see :func:`diffaug_fast.ops.diffuse`.
    """
    _checks.check_tensor(_FN, "x_t", x_t)
    _checks.check_tensor(_FN, "x0", x0)
    _checks.check_same_device(_FN, "x_t", x_t, x0=x0)
    if x_t.dim() < 2:
        raise ValueError(f"{_FN}(): argument 'x_t' must be [B, C, ...], got shape {list(x_t.shape)}")
    if x0.shape != x_t.shape:
        raise ValueError(f"{_FN}(): argument 'x0' has shape {list(x0.shape)}; expected x_t's {list(x_t.shape)}")
    w_t, w_0 = _weights("w_t", w_t, x_t), _weights("w_0", w_0, x_t)
    return run_op("dual_fusion", backend, x_t.device, x_t, x0, w_t, w_0, bool(concat))


def concat_inputs(x_t: torch.Tensor, x0_hat: torch.Tensor, scale_t=1.0, scale_0=1.0, *, backend: str | None = None):
    """The DA classifier's input: ``[scale_t*x_t, scale_0*x0_hat]`` along channels, in one pass."""
    return dual_fusion(x_t, x0_hat, scale_t, scale_0, concat=True, backend=backend)


def gated_fusion(h_t: torch.Tensor, h_0: torch.Tensor, gate, *, backend: str | None = None):
    """``gate*h_t + (1 - gate)*h_0`` with ``gate`` [B] or [B, C] (differentiable, e.g. from the time embedding)."""
    gate = _weights("gate", gate, h_t)
    return dual_fusion(h_t, h_0, gate, 1.0 - gate, concat=False, backend=backend)


@torch.library.custom_op("diffaug_fast::dual_fusion_triton", mutates_args=())
def _dual_fusion_triton(x_t: torch.Tensor, x0: torch.Tensor, w_t: torch.Tensor, w_0: torch.Tensor,
                        concat: bool) -> torch.Tensor:
    from diffaug_fast.ops.triton import kernels

    x_t = canonical_input(x_t)
    layout = BatchLayout.of(x_t)
    return kernels.dual_fusion(x_t, layout.as_blocks(x0.to(x_t.dtype)), w_t.contiguous(), w_0.contiguous(), concat,
                               layout)


def _fake(x_t, x0, w_t, w_0, concat):
    layout = BatchLayout.of(canonical_input(x_t))
    sizes = list(x_t.shape)
    if concat:
        sizes[1] *= 2
    return torch.empty(sizes, dtype=x_t.dtype, device=x_t.device, memory_format=layout.memory_format)


def _setup_context(ctx, inputs, output):
    x_t, x0, w_t, w_0, concat = inputs
    ctx.concat = concat
    ctx.x0_dtype = x0.dtype
    ctx.save_for_backward(x_t, x0, w_t, w_0)


def _backward(ctx, grad):
    x_t, x0, w_t, w_0 = ctx.saved_tensors
    channels = x_t.shape[1]
    g = grad.to(torch.float32)
    g_t, g_0 = (g[:, :channels], g[:, channels:]) if ctx.concat else (g, g)
    shape = tuple(w_t.shape) + (1,) * (x_t.dim() - 2)
    spatial = tuple(range(2, x_t.dim()))

    def reduce(v):  # sum over everything but (example, channel)
        return v.sum(spatial) if spatial else v

    grad_xt = (g_t * w_t.view(shape)).to(x_t.dtype)
    grad_x0 = (g_0 * w_0.view(shape)).to(ctx.x0_dtype)
    grad_wt = reduce(g_t * x_t.to(torch.float32))
    grad_w0 = reduce(g_0 * x0.to(torch.float32))
    return grad_xt, grad_x0, grad_wt, grad_w0, None


register_fake_and_autograd(["diffaug_fast::dual_fusion_triton", "diffaug_fast::dual_fusion"], _fake, _backward,
                           _setup_context)
