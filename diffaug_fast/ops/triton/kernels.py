"""Triton kernels for diffuse, denoise_epilogue, guided_step and dual_fusion.

Each program handles BLOCK consecutive elements of the (example-blocked)
tensors. The noise is ``tl.randn(seed, offset + NCHW index)``, which is the
stream the C++/CUDA kernels reproduce. Parametrization and step-mode codes and the columns of
guided_step's coefficient row come from :mod:`diffaug_fast.ops.layout` (one definition, in C++).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from diffaug_fast.ops import layout

_BLOCK = 1024

# The layout as compile-time constants of the kernels.
EPS, V, X0 = tl.constexpr(layout.EPS), tl.constexpr(layout.V), tl.constexpr(layout.X0)
DDIM = tl.constexpr(layout.DDIM)
DDIM_CLIP_AFTER_SHIFT = tl.constexpr(layout.DDIM_CLIP_AFTER_SHIFT)
STEP_COEFFICIENTS = tl.constexpr(layout.STEP_COEFFICIENTS)
COL_A, COL_S = tl.constexpr(layout.COL_A), tl.constexpr(layout.COL_S)
COL_DDPM_MEAN_X0 = tl.constexpr(layout.COL_DDPM_MEAN_X0)
COL_DDPM_MEAN_XT = tl.constexpr(layout.COL_DDPM_MEAN_XT)
COL_DDPM_LOG_VAR_MIN = tl.constexpr(layout.COL_DDPM_LOG_VAR_MIN)
COL_DDPM_LOG_VAR_MAX = tl.constexpr(layout.COL_DDPM_LOG_VAR_MAX)
COL_DDPM_NOISE = tl.constexpr(layout.COL_DDPM_NOISE)
COL_DDIM_A_PREV = tl.constexpr(layout.COL_DDIM_A_PREV)
COL_DDIM_DIR = tl.constexpr(layout.COL_DDIM_DIR)
COL_DDIM_SIGMA = tl.constexpr(layout.COL_DDIM_SIGMA)


@triton.jit
def _block_of_examples(a_ptr, s_ptr, total, inner, BLOCK: tl.constexpr):
    """This program's element indices, mask, example index b, offset m inside it, and a[b], s[b]."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = i < total
    b = i // inner
    m = i - b * inner
    a = tl.load(a_ptr + b, mask=mask, other=1.0)
    s = tl.load(s_ptr + b, mask=mask, other=0.0)
    return i, mask, b, m, a, s


@triton.jit
def _noise_at(seed, offset, b, m, inner, channels, pixels, CHANNELS_LAST: tl.constexpr):
    """tl.randn at counter offset + NCHW index of element m of example b (the C++ kernels' stream)."""
    if CHANNELS_LAST:
        logical = (m % channels) * pixels + m // channels
    else:
        logical = m
    return tl.randn(seed, b * inner + logical + offset)


@triton.jit
def _diffuse_kernel(x0_ptr, noise_ptr, noise_bstride, xt_ptr, eps_ptr, a_ptr, s_ptr, total, inner, channels,
                    pixels, seed, offset, CHANNELS_LAST: tl.constexpr, HAS_NOISE: tl.constexpr,
                    WRITE_EPS: tl.constexpr, BLOCK: tl.constexpr):
    i, mask, b, m, a, s = _block_of_examples(a_ptr, s_ptr, total, inner, BLOCK)
    x = tl.load(x0_ptr + i, mask=mask, other=0.0).to(tl.float32)
    if HAS_NOISE:
        e = tl.load(noise_ptr + b * noise_bstride + m, mask=mask, other=0.0).to(tl.float32)
    else:
        e = _noise_at(seed, offset, b, m, inner, channels, pixels, CHANNELS_LAST)
        if WRITE_EPS:
            tl.store(eps_ptr + i, e.to(eps_ptr.dtype.element_ty), mask=mask)
    tl.store(xt_ptr + i, (a * x + s * e).to(xt_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _epilogue_kernel(xt_ptr, out_ptr, out_bstride, x0_ptr, a_ptr, s_ptr, total, inner, limit,
                     PARAM: tl.constexpr, BLOCK: tl.constexpr):
    i, mask, b, m, a, s = _block_of_examples(a_ptr, s_ptr, total, inner, BLOCK)
    if PARAM == EPS:
        alpha = 1.0 / a
        beta = -s / a
    elif PARAM == V:
        norm = 1.0 / (a * a + s * s)
        alpha = a * norm
        beta = -s * norm
    elif PARAM == X0:
        alpha = a * 0.0
        beta = alpha + 1.0
    else:  # score
        alpha = 1.0 / a
        beta = s * s / a
    x = tl.load(xt_ptr + i, mask=mask, other=0.0).to(tl.float32)
    o = tl.load(out_ptr + b * out_bstride + m, mask=mask, other=0.0).to(tl.float32)
    r = alpha * x + beta * o
    r = tl.where(r > limit, limit, tl.where(r < -limit, -limit, r))
    tl.store(x0_ptr + i, r.to(x0_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _step_kernel(xt_ptr, eps_ptr, eps_bstride, var_ptr, var_bstride, grad_ptr, grad_bstride, noise_ptr,
                 noise_bstride, out_ptr, coef_ptr, total, inner, channels, pixels, scale, limit, seed, offset,
                 MODE: tl.constexpr, LEARNED: tl.constexpr, HAS_GRAD: tl.constexpr, HAS_NOISE: tl.constexpr,
                 CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr):
    # coef rows: the COL_* columns of ops/layout.py (formulas in csrc/include/diffaug_fast/step.h)
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = i < total
    b = i // inner
    m = i - b * inner
    row = coef_ptr + b * STEP_COEFFICIENTS
    a = tl.load(row + COL_A, mask=mask, other=1.0)
    s = tl.load(row + COL_S, mask=mask, other=1.0)
    xt = tl.load(xt_ptr + i, mask=mask, other=0.0).to(tl.float32)
    e = tl.load(eps_ptr + b * eps_bstride + m, mask=mask, other=0.0).to(tl.float32)
    if HAS_GRAD:
        g = tl.load(grad_ptr + b * grad_bstride + m, mask=mask, other=0.0).to(tl.float32)
    else:
        g = xt * 0.0
    if HAS_NOISE:
        z = tl.load(noise_ptr + b * noise_bstride + m, mask=mask, other=0.0).to(tl.float32)
    else:
        z = _noise_at(seed, offset, b, m, inner, channels, pixels, CHANNELS_LAST)
    if MODE == DDIM:  # guidance on eps, guided-diffusion's order: clip x0, shift eps, x0 from it unclipped
        a_prev = tl.load(row + COL_DDIM_A_PREV, mask=mask, other=0.0)
        direction = tl.load(row + COL_DDIM_DIR, mask=mask, other=0.0)
        sigma = tl.load(row + COL_DDIM_SIGMA, mask=mask, other=0.0)
        x0c = (xt - s * e) / a
        x0c = tl.where(x0c > limit, limit, tl.where(x0c < -limit, -limit, x0c))
        shift = s * scale * g
        e2 = (xt - a * x0c) / s - shift
        x0 = x0c + s * shift / a
        r = a_prev * x0 + direction * e2 + sigma * z
    elif MODE == DDIM_CLIP_AFTER_SHIFT:  # guidance on eps, the older order: shift eps, then clip x0
        a_prev = tl.load(row + COL_DDIM_A_PREV, mask=mask, other=0.0)
        direction = tl.load(row + COL_DDIM_DIR, mask=mask, other=0.0)
        sigma = tl.load(row + COL_DDIM_SIGMA, mask=mask, other=0.0)
        e = e - s * scale * g
        x0 = (xt - s * e) / a
        x0 = tl.where(x0 > limit, limit, tl.where(x0 < -limit, -limit, x0))
        e2 = (xt - a * x0) / s
        r = a_prev * x0 + direction * e2 + sigma * z
    else:  # DDPM, guidance on the mean
        mean_x0 = tl.load(row + COL_DDPM_MEAN_X0, mask=mask, other=0.0)
        mean_xt = tl.load(row + COL_DDPM_MEAN_XT, mask=mask, other=0.0)
        log_var_min = tl.load(row + COL_DDPM_LOG_VAR_MIN, mask=mask, other=0.0)
        log_var_max = tl.load(row + COL_DDPM_LOG_VAR_MAX, mask=mask, other=0.0)
        noise_on = tl.load(row + COL_DDPM_NOISE, mask=mask, other=0.0)
        x0 = (xt - s * e) / a
        x0 = tl.where(x0 > limit, limit, tl.where(x0 < -limit, -limit, x0))
        mean = mean_x0 * x0 + mean_xt * xt
        if LEARNED:
            v = tl.load(var_ptr + b * var_bstride + m, mask=mask, other=0.0).to(tl.float32)
            frac = 0.5 * (v + 1.0)
            log_var = frac * log_var_max + (1.0 - frac) * log_var_min
        else:
            log_var = log_var_min + xt * 0.0
        r = mean + scale * tl.exp(log_var) * g + noise_on * tl.exp(0.5 * log_var) * z
    tl.store(out_ptr + i, r.to(out_ptr.dtype.element_ty), mask=mask)


def guided_step(x_t, eps, var_interp, grad, coef, noise, mode, scale, clip, seed, offset, layout):
    out = layout.empty_like(x_t)
    if x_t.numel() == 0:
        return out
    limit = float("inf") if clip is None else float(clip)
    _step_kernel[_grid(x_t.numel())](
        x_t, eps, layout.batch_stride(eps), var_interp if var_interp is not None else eps,
        layout.batch_stride(var_interp), grad if grad is not None else x_t, layout.batch_stride(grad),
        noise if noise is not None else x_t, layout.batch_stride(noise), out, coef, x_t.numel(), layout.inner,
        layout.channels, layout.pixels, float(scale), limit, seed, offset, MODE=mode, LEARNED=var_interp is not None,
        HAS_GRAD=grad is not None, HAS_NOISE=noise is not None, CHANNELS_LAST=layout.channels_last, BLOCK=_BLOCK)
    return out


def _grid(total: int):
    return (triton.cdiv(total, _BLOCK),)


def diffuse(x0, a, s, noise, seed, offset, return_noise, layout):
    xt = layout.empty_like(x0)
    make_noise = noise is None
    eps = layout.empty_like(x0) if (return_noise and make_noise) else x0.new_empty(0)
    if x0.numel() == 0:
        return xt, eps
    _diffuse_kernel[_grid(x0.numel())](
        x0, noise if noise is not None else x0, layout.batch_stride(noise), xt, eps if eps.numel() else xt,
        a, s, x0.numel(), layout.inner, layout.channels, layout.pixels, seed, offset,
        CHANNELS_LAST=layout.channels_last, HAS_NOISE=not make_noise, WRITE_EPS=bool(eps.numel()), BLOCK=_BLOCK)
    return xt, eps


def denoise_epilogue(x_t, model_out, a, s, parametrization, clip, layout):
    x0 = layout.empty_like(x_t)
    if x_t.numel() == 0:
        return x0
    limit = float("inf") if clip is None else float(clip)
    _epilogue_kernel[_grid(x_t.numel())](
        x_t, model_out, layout.batch_stride(model_out), x0, a, s, x_t.numel(), layout.inner, limit,
        PARAM=parametrization, BLOCK=_BLOCK)
    return x0


def random_normal(seed: int, offsets: torch.Tensor) -> torch.Tensor:
    """``tl.randn(seed, offsets)`` itself, for testing that our stream is Triton's."""
    out = torch.empty(offsets.shape, dtype=torch.float32, device=offsets.device)
    _randn_kernel[_grid(offsets.numel())](offsets, out, offsets.numel(), seed, BLOCK=_BLOCK)
    return out


@triton.jit
def _randn_kernel(offsets_ptr, out_ptr, total, seed, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < total
    tl.store(out_ptr + i, tl.randn(seed, tl.load(offsets_ptr + i, mask=mask, other=0)), mask=mask)


@triton.jit
def _fusion_kernel(xt_ptr, x0_ptr, x0_bstride, wt_ptr, w0_ptr, out_ptr, total, inner, channels, pixels,
                   CHANNELS_LAST: tl.constexpr, CONCAT: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = i < total
    out_channels = 2 * channels if CONCAT else channels
    b = i // (out_channels * pixels)
    r = i - b * (out_channels * pixels)
    if CHANNELS_LAST:
        oc = r % out_channels
        q = r // out_channels
    else:
        oc = r // pixels
        q = r % pixels
    c = oc % channels
    if CHANNELS_LAST:
        m = q * channels + c
    else:
        m = c * pixels + q
    u = tl.load(wt_ptr + b * channels + c, mask=mask, other=0.0)
    v = tl.load(w0_ptr + b * channels + c, mask=mask, other=0.0)
    if CONCAT:
        first = oc < channels
        x = tl.load(xt_ptr + b * inner + m, mask=mask & first, other=0.0).to(tl.float32)
        z = tl.load(x0_ptr + b * x0_bstride + m, mask=mask & (oc >= channels), other=0.0).to(tl.float32)
        y = tl.where(first, u * x, v * z)
    else:
        x = tl.load(xt_ptr + b * inner + m, mask=mask, other=0.0).to(tl.float32)
        z = tl.load(x0_ptr + b * x0_bstride + m, mask=mask, other=0.0).to(tl.float32)
        y = u * x + v * z
    tl.store(out_ptr + i, y.to(out_ptr.dtype.element_ty), mask=mask)


def dual_fusion(x_t, x0, w_t, w_0, concat, layout):
    sizes = list(x_t.shape)
    if concat:
        sizes[1] *= 2
    out = torch.empty(sizes, dtype=x_t.dtype, device=x_t.device, memory_format=layout.memory_format)
    if out.numel() == 0:
        return out
    channels = x_t.shape[1]
    pixels = layout.inner // channels if channels else 0
    _fusion_kernel[_grid(out.numel())](
        x_t, x0, layout.batch_stride(x0), w_t, w_0, out, out.numel(), layout.inner, channels, pixels,
        CHANNELS_LAST=layout.channels_last, CONCAT=bool(concat), BLOCK=_BLOCK)
    return out
