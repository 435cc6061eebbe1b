"""Plain-PyTorch versions of every op: the oracle the fast backends are tested against.

Everything here is written for clarity and runs on any device. The noise is
the same counter-based Philox4x32-10 + Box-Muller stream as the kernels
(and Triton's ``tl.randn``): 32-bit words are held in int64 tensors.
"""
from __future__ import annotations

import math

import torch

from diffaug_fast.ops import layout
# The codes, re-exported here for the benchmarks and tests that name them through the reference.
from diffaug_fast.ops.layout import DDIM, DDPM, EPS, PARAMETRIZATIONS, SCORE, STEP_MODES, V, X0  # noqa: F401

_MASK32 = 0xFFFFFFFF
_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85
_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57


def _mul_wide(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) 32-bit words of x*k for 32-bit x and constant k, without int64 overflow."""
    k_hi, k_lo = k >> 16, k & 0xFFFF
    prod_hi, prod_lo = x * k_hi, x * k_lo  # each < 2**48
    high = (prod_hi + (prod_lo >> 16)) >> 16
    low = (((prod_hi & 0xFFFF) << 16) + prod_lo) & _MASK32
    return high, low


def philox4x32_10(c0, c1, c2, c3, k0: int, k1: int):
    """Ten Philox4x32 rounds on int64 tensors holding 32-bit counter words."""
    for _ in range(10):
        hi_b, lo_b = _mul_wide(c2, _ROUND_B)
        hi_a, lo_a = _mul_wide(c0, _ROUND_A)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0, k1 = (k0 + _KEY_A) & _MASK32, (k1 + _KEY_B) & _MASK32
    return c0, c1, c2, c3


def _word_to_uniform(word: torch.Tensor) -> torch.Tensor:
    signed = torch.where(word >= 2**31, word - 2**32, word)  # read the word as int32
    folded = torch.where(signed < 0, -signed - 1, signed)  # ~x for negatives
    return folded.to(torch.float32) * 4.6566127342e-10


def philox_normal(seed: int, counters: torch.Tensor) -> torch.Tensor:
    """Standard normals, float32, for int64 counters (offset + element index)."""
    counters = counters.to(torch.int64)
    zero = torch.zeros_like(counters)
    w0, w1, _, _ = philox4x32_10(counters & _MASK32, counters >> 32, zero, zero, seed & _MASK32, seed >> 32)
    u1 = _word_to_uniform(w0).clamp_min(1.0e-7)
    u2 = _word_to_uniform(w1)
    radius = torch.sqrt(-2.0 * torch.log(u1))
    return radius * torch.cos(torch.tensor(2 * math.pi, dtype=torch.float32) * u2)


def _per_example(coef: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return coef.to(torch.float32).reshape((-1,) + (1,) * (like.dim() - 1))


def noise_like(x: torch.Tensor, seed: int, offset: int) -> torch.Tensor:
    """The noise the kernels attach to each element of x (NCHW element order), float32."""
    counters = offset + torch.arange(x.numel(), device=x.device, dtype=torch.int64).reshape(x.shape)
    return philox_normal(seed, counters)


def diffuse(x0, a, s, noise, seed: int, offset: int, return_noise: bool):
    eps = noise.to(torch.float32) if noise is not None else noise_like(x0, seed, offset)
    xt = (_per_example(a, x0) * x0.to(torch.float32) + _per_example(s, x0) * eps).to(x0.dtype)
    if return_noise and noise is None:
        return xt, eps.to(x0.dtype)
    return xt, x0.new_empty(0)


def x0_affine(parametrization: int, a: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example (alpha, beta) with x0_hat = alpha*x_t + beta*model_out (see csrc/include/.../epilogue.h)."""
    a, s = a.to(torch.float32), s.to(torch.float32)
    if parametrization == EPS:
        return 1.0 / a, -s / a
    if parametrization == V:
        norm = 1.0 / (a * a + s * s)
        return a * norm, -s * norm
    if parametrization == X0:
        return torch.zeros_like(a), torch.ones_like(a)
    if parametrization == SCORE:
        return 1.0 / a, s * s / a
    raise ValueError(f"unknown parametrization {parametrization}")


def denoise_epilogue(x_t, model_out, a, s, parametrization: int, clip: float | None):
    alpha, beta = x0_affine(parametrization, a, s)
    x0 = _per_example(alpha, x_t) * x_t.to(torch.float32) + _per_example(beta, x_t) * model_out.to(torch.float32)
    if clip is not None:
        x0 = x0.clamp(-clip, clip)
    return x0.to(x_t.dtype)


def guided_step(x_t, eps, var_interp, grad, coef, noise, mode: int, scale: float, clip: float | None, seed: int,
                offset: int):
    """One reverse step; see csrc/include/diffaug_fast/step.h for the formulas, ops/layout.py for coef's columns."""

    def col(k: int) -> torch.Tensor:
        return _per_example(coef[:, k], x_t)

    a, s = col(layout.COL_A), col(layout.COL_S)
    z = noise.to(torch.float32) if noise is not None else noise_like(x_t, seed, offset)
    xt, e = x_t.to(torch.float32), eps.to(torch.float32)
    g = grad.to(torch.float32) if grad is not None else torch.zeros_like(xt)
    limit = math.inf if clip is None else clip
    if mode in layout.DDIM_CODES:
        if mode == layout.DDIM_CLIP_AFTER_SHIFT:  # the older variant: shift eps, then clip the x0 made from it
            e = e - s * scale * g
            x0 = ((xt - s * e) / a).clamp(-limit, limit)
            e = (xt - a * x0) / s
        else:  # guided-diffusion: clip x0, shift eps; x0 = (x_t - s*eps')/a is not clipped again
            x0c = ((xt - s * e) / a).clamp(-limit, limit)
            shift = s * scale * g
            e = (xt - a * x0c) / s - shift
            x0 = x0c + s * shift / a
        return (col(layout.COL_DDIM_A_PREV) * x0 + col(layout.COL_DDIM_DIR) * e
                + col(layout.COL_DDIM_SIGMA) * z).to(x_t.dtype)
    x0 = ((xt - s * e) / a).clamp(-limit, limit)
    mean = col(layout.COL_DDPM_MEAN_X0) * x0 + col(layout.COL_DDPM_MEAN_XT) * xt
    log_var_min = col(layout.COL_DDPM_LOG_VAR_MIN)
    if var_interp is not None:
        frac = 0.5 * (var_interp.to(torch.float32) + 1.0)
        log_var = frac * col(layout.COL_DDPM_LOG_VAR_MAX) + (1.0 - frac) * log_var_min
    else:
        log_var = log_var_min.expand_as(xt)
    return (mean + scale * torch.exp(log_var) * g
            + col(layout.COL_DDPM_NOISE) * torch.exp(0.5 * log_var) * z).to(x_t.dtype)


def dual_fusion(x_t, x0, w_t, w_0, concat: bool):
    """concat: (w_t*x_t, w_0*x0) stacked along channels; else w_t*x_t + w_0*x0. Weights [B, C] in float32."""
    shape = tuple(w_t.shape) + (1,) * (x_t.dim() - 2)
    xt, z = x_t.to(torch.float32), x0.to(torch.float32)
    first, second = w_t.view(shape) * xt, w_0.view(shape) * z
    out = torch.cat([first, second], 1) if concat else first + second
    return out.to(x_t.dtype)
