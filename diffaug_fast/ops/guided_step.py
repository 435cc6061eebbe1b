"""Op ``guided_step``: one DDPM or DDIM reverse step with classifier guidance and its noise, in one pass."""
from __future__ import annotations

from typing import Optional

import torch

from diffaug_fast.ops import checks as _checks
from diffaug_fast.ops.backends import run_op
from diffaug_fast.ops.layout import (COL_A, COL_DDIM_A_PREV, COL_DDIM_DIR, COL_DDIM_SIGMA, COL_DDPM_LOG_VAR_MAX,
                                     COL_DDPM_LOG_VAR_MIN, COL_DDPM_MEAN_X0, COL_DDPM_MEAN_XT, COL_DDPM_NOISE, COL_S,
                                     DDIM_CLIP_AFTER_SHIFT, DDIM_CODES, DDIM_GUIDANCE, STEP_COEFFICIENTS,
                                     STEP_MODES)
from diffaug_fast.ops.plan import BatchLayout, canonical_input, register_fake_and_autograd
from diffaug_fast.ops.reference import noise_like

_FN = "guided_step"


def guided_step(x_t: torch.Tensor, model_out: torch.Tensor, coef: torch.Tensor, *, mode: str = "ddpm",
                grad: torch.Tensor | None = None, scale: float = 1.0, clip: float | bool | None = None,
                learn_sigma: bool = False, ddim_guidance: str = "guided_diffusion", seed: int | None = None,
                offset: int = 0, noise: torch.Tensor | None = None, backend: str | None = None) -> torch.Tensor:
    """``x_{t-1}`` from ``x_t`` and an eps-prediction, optionally guided by ``grad = ∇log p(y|x_t)``.

    Args:
        x_t: current samples ``[B, C, ...]``.
        model_out: the network's eps prediction; with ``learn_sigma=True`` ``[B, 2C, ...]`` whose second
            half interpolates the DDPM log-variance (Improved DDPM; DDIM ignores it). Read in place.
        coef: ``[B, STEP_COEFFICIENTS]`` (8) per-example coefficients from
            :func:`diffaug_fast.diffusion.step_coefficients` (they encode the schedule, step and eta);
            columns as in :mod:`diffaug_fast.ops.layout`.
        mode: 'ddpm' (ancestral; guidance shifts the mean by ``scale·Σ·grad``, guided-diffusion's
            condition_mean) or 'ddim' (guidance corrects eps by ``-sqrt(1-abar)·scale·grad``).
        grad, scale: classifier gradient and guidance scale; ``grad=None`` is unguided.
        clip: clamp the x0 estimate made from the model's eps to ``[-clip, clip]`` (True: 1.0).
        ddim_guidance: the order of clip and guidance in a DDIM step. 'guided_diffusion' (default) is
            guided-diffusion's condition_score + ddim_sample: x0 is clipped first, eps is then shifted, and the
            x0 made from the shifted eps is not clipped again. 'clip_after_shift' (the older behaviour of this
            package) shifts eps first and clips the x0 made from it. Unguided both are the same step; DDPM
            ignores the argument.
        seed, offset, noise: the step's noise, as in :func:`diffaug_fast.ops.diffuse`.
    """
    _checks.check_tensor(_FN, "x_t", x_t)
    _checks.check_tensor(_FN, "model_out", model_out)
    if mode not in STEP_MODES:
        raise ValueError(f"{_FN}(): argument 'mode' is {mode!r}; expected 'ddpm' or 'ddim'")
    if ddim_guidance not in DDIM_GUIDANCE:
        raise ValueError(f"{_FN}(): argument 'ddim_guidance' is {ddim_guidance!r}; expected one of "
                         f"{', '.join(map(repr, DDIM_GUIDANCE))}")
    _checks.check_model_output(_FN, x_t, model_out, learn_sigma)
    batch = x_t.shape[0]
    if not isinstance(coef, torch.Tensor) or coef.shape != (batch, STEP_COEFFICIENTS):
        raise ValueError(f"{_FN}(): argument 'coef' must be a [{batch}, {STEP_COEFFICIENTS}] tensor from "
                         f"step_coefficients(), got {getattr(coef, 'shape', type(coef).__name__)}")
    for name, t in (("grad", grad), ("noise", noise)):
        if t is not None:
            _checks.check_tensor(_FN, name, t)
            if t.shape != x_t.shape:
                raise ValueError(f"{_FN}(): argument '{name}' must have the shape of x_t {list(x_t.shape)}, "
                                 f"got {list(t.shape)}")
    _checks.check_same_device(_FN, "x_t", x_t, model_out=model_out, coef=coef, grad=grad, noise=noise)
    coef = coef.detach().to(torch.float32)
    _checks.check_finite(_FN, "coef", coef)
    if not isinstance(scale, (int, float)) or isinstance(scale, bool):
        raise TypeError(f"{_FN}(): argument 'scale' must be a number, got {type(scale).__name__}")
    clip = _checks.clip_limit(_FN, clip)
    seed = _checks.resolve_seed(_FN, seed, offset)

    channels = x_t.shape[1] if x_t.dim() >= 2 else 0
    eps = model_out.narrow(1, 0, channels) if learn_sigma else model_out
    var_interp = model_out.narrow(1, channels, channels) if (learn_sigma and mode == "ddpm") else None
    code = DDIM_GUIDANCE[ddim_guidance] if mode == "ddim" else STEP_MODES[mode]
    return run_op("guided_step", backend, x_t.device, x_t, eps, var_interp, grad, coef, noise, code, float(scale),
                  clip, seed, offset)


@torch.library.custom_op("diffaug_fast::guided_step_triton", mutates_args=())
def _guided_step_triton(x_t: torch.Tensor, eps: torch.Tensor, var_interp: Optional[torch.Tensor],
                        grad: Optional[torch.Tensor], coef: torch.Tensor, noise: Optional[torch.Tensor], mode: int,
                        scale: float, clip: Optional[float], seed: int, offset: int) -> torch.Tensor:
    from diffaug_fast.ops.triton import kernels

    x_t = canonical_input(x_t)
    layout = BatchLayout.of(x_t)

    def blocks(t, cast):
        return None if t is None else layout.as_blocks(t.to(x_t.dtype) if cast else t)

    return kernels.guided_step(x_t, blocks(eps, False), blocks(var_interp, False), blocks(grad, True),
                               coef.contiguous(), blocks(noise, True), mode, scale, clip, seed, offset, layout)


def _fake(x_t, eps, var_interp, grad, coef, noise, mode, scale, clip, seed, offset):
    return BatchLayout.of(canonical_input(x_t)).empty_like(x_t)


def _setup_context(ctx, inputs, output):
    x_t, eps, var_interp, grad, coef, noise, mode, scale, clip, seed, offset = inputs
    ctx.mode, ctx.scale, ctx.clip, ctx.seed, ctx.offset = mode, scale, clip, seed, offset
    ctx.save_for_backward(x_t, eps, var_interp, grad, coef, noise)


def _backward(ctx, grad_out):
    """Gradients of the step (formulas in csrc/include/diffaug_fast/step.h) for x_t, eps, var_interp, grad and
    noise, in float32; the clamp of x0 passes the gradient where the unclamped value was inside the range."""
    x_t, eps, var_interp, grad, coef, noise = ctx.saved_tensors
    need = ctx.needs_input_grad
    shape = (-1,) + (1,) * (grad_out.dim() - 1)

    def col(k: int) -> torch.Tensor:
        return coef[:, k].to(torch.float32).view(shape)

    go = grad_out.to(torch.float32)
    a, s, scale = col(COL_A), col(COL_S), ctx.scale
    xt, e = x_t.to(torch.float32), eps.to(torch.float32)
    g = grad.to(torch.float32) if grad is not None else None
    d_grad = None  # d out / d grad
    if ctx.mode in DDIM_CODES:
        a_prev, direction = col(COL_DDIM_A_PREV), col(COL_DDIM_DIR)
        if ctx.mode == DDIM_CLIP_AFTER_SHIFT and g is not None:
            e = e - s * scale * g  # the clamp sees the shifted eps; grad enters through it like eps
        elif g is not None:  # guided-diffusion: out = ... + scale*grad*s*(a_prev*s/a - dir), past the clamp
            d_grad = scale * s * (a_prev * s / a - direction)
        dx0 = a_prev - direction * a / s  # d out / d x0 (x0 also enters through eps'')
        d_xt_direct = direction / s
        d_noise = col(COL_DDIM_SIGMA)
        d_var = None
    else:
        dx0 = col(COL_DDPM_MEAN_X0)
        d_xt_direct = col(COL_DDPM_MEAN_XT)
        log_var_min, log_var_max = col(COL_DDPM_LOG_VAR_MIN), col(COL_DDPM_LOG_VAR_MAX)
        if var_interp is not None:
            frac = 0.5 * (var_interp.to(torch.float32) + 1.0)
            log_var = frac * log_var_max + (1.0 - frac) * log_var_min
        else:
            log_var = log_var_min
        var, std = torch.exp(log_var), torch.exp(0.5 * log_var)
        d_grad = scale * var
        d_noise = col(COL_DDPM_NOISE) * std
        d_var = None
        if var_interp is not None and need[2]:
            z = noise.to(torch.float32) if noise is not None else noise_like(x_t, ctx.seed, ctx.offset)
            d_log_var = 0.5 * d_noise * z + (scale * var * g if g is not None else 0.0)
            d_var = d_log_var * 0.5 * (log_var_max - log_var_min)
    d_r = dx0  # d out / d r with r = (x_t - s*eps)/a the unclamped x0 (eps shifted first in clip_after_shift)
    if ctx.clip is not None:
        d_r = d_r * (((xt - s * e) / a).abs() <= ctx.clip)
    d_e = -d_r * s / a  # d out / d eps
    if ctx.mode == DDIM_CLIP_AFTER_SHIFT:
        d_grad = d_e * (-s * scale)  # d eps' / d grad = -s*scale

    def out(t, d):
        return None if t is None else (go * d).expand_as(go).to(t.dtype)

    grad_xt = out(x_t, d_xt_direct + d_r / a) if need[0] else None
    grad_eps = out(eps, d_e) if need[1] else None
    grad_var = out(var_interp, d_var) if d_var is not None else None
    grad_grad = out(grad, d_grad) if grad is not None and need[3] else None
    grad_noise = out(noise, d_noise) if noise is not None and need[5] else None
    return grad_xt, grad_eps, grad_var, grad_grad, None, grad_noise, None, None, None, None, None


# Differentiable in x_t, eps, var_interp, grad and noise (not in coef); sampling itself runs without autograd.
register_fake_and_autograd(["diffaug_fast::guided_step_triton", "diffaug_fast::guided_step"], _fake, _backward,
                           _setup_context)
