"""Op ``diffuse``: x_t = a*x0 + s*eps in one pass, eps made in-kernel from (seed, offset)."""
from __future__ import annotations

from typing import Optional

import torch

from diffaug_fast.ops import checks as _checks
from diffaug_fast.ops.plan import BatchLayout, canonical_input, register_fake_and_autograd
from diffaug_fast.ops.backends import run_op

_FN = "diffuse"


def diffuse(x0: torch.Tensor, a, s, *, seed: int | None = None, offset: int = 0,
            noise: torch.Tensor | None = None, return_noise: bool = False, backend: str | None = None):
    """Forward diffusion with per-example coefficients: ``x_t = a[b]*x0 + s[b]*eps``.

    Args:
        x0: images ``[B, ...]`` (float32/bfloat16/float16, NCHW or channels_last).
        a, s: ``[B]`` signal and noise scales (or numbers), e.g. from ``Schedule.coefficients(t)``.
        seed, offset: key of the in-kernel Philox noise; element ``i`` (NCHW order) gets
            counter ``offset + i``, so advance ``offset`` by ``x0.numel()`` for a fresh draw.
            ``seed=None`` draws a seed from torch's global generator.
        noise: use this ``eps`` instead of making it (e.g. a shared eps for two times).
        return_noise: also return ``eps`` (the training target of a denoiser).
        backend: 'reference' | 'cpu' | 'cuda' | 'triton' (default: $DIFFAUG_FAST_BACKEND, else by device).

    Returns ``x_t`` (same dtype and memory format as ``x0``), or ``(x_t, eps)``.
    Differentiable with respect to ``x0`` and ``noise``.
    """
    _checks.check_tensor(_FN, "x0", x0)
    batch = x0.shape[0]
    a = _checks.per_example(_FN, "a", a, batch, x0.device)
    s = _checks.per_example(_FN, "s", s, batch, x0.device)
    _checks.check_coefficients(_FN, a, s)
    if noise is not None:
        _checks.check_tensor(_FN, "noise", noise)
        _checks.check_same_device(_FN, "x0", x0, noise=noise)
        if noise.shape != x0.shape:
            raise ValueError(f"{_FN}(): argument 'noise' must have the shape of x0 {list(x0.shape)}, "
                             f"got {list(noise.shape)}")
    seed = _checks.resolve_seed(_FN, seed, offset)
    xt, eps = run_op("diffuse", backend, x0.device, x0, a, s, noise, seed, offset, return_noise)
    if return_noise:
        return xt, (noise if noise is not None else eps)
    return xt


@torch.library.custom_op("diffaug_fast::diffuse_triton", mutates_args=())
def _diffuse_triton(x0: torch.Tensor, a: torch.Tensor, s: torch.Tensor, noise: Optional[torch.Tensor],
                    seed: int, offset: int, return_noise: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from diffaug_fast.ops.triton import kernels

    x0 = canonical_input(x0)
    layout = BatchLayout.of(x0)
    if noise is not None:
        noise = layout.as_blocks(noise.to(x0.dtype))
    return kernels.diffuse(x0, a.contiguous(), s.contiguous(), noise, seed, offset, return_noise, layout)


def _fake(x0, a, s, noise, seed, offset, return_noise):
    layout = BatchLayout.of(canonical_input(x0))
    eps = layout.empty_like(x0) if (return_noise and noise is None) else x0.new_empty(0)
    return layout.empty_like(x0), eps


def _setup_context(ctx, inputs, output):
    x0, a, s, noise, *_ = inputs
    ctx.save_for_backward(a, s)
    ctx.has_noise = noise is not None


def _backward(ctx, grad_xt, _grad_eps):
    a, s = ctx.saved_tensors
    shape = (-1,) + (1,) * (grad_xt.dim() - 1)
    grad_x0 = (grad_xt * a.view(shape)).to(grad_xt.dtype)
    grad_noise = (grad_xt * s.view(shape)).to(grad_xt.dtype) if ctx.has_noise else None
    return grad_x0, None, None, grad_noise, None, None, None


register_fake_and_autograd(["diffaug_fast::diffuse_triton", "diffaug_fast::diffuse"], _fake, _backward, _setup_context)
