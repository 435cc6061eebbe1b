"""Per-example coefficients of one reverse step (DDPM or DDIM) on a VP schedule, for ops.guided_step.

Grid index i steps to i-1 (alphabar_{-1} = 1), so respaced schedules need nothing special: their
betas are derived from the kept alphabars. The row's columns are named in diffaug_fast.ops.layout
(defined once in csrc/include/diffaug_fast/layout.h; the formulas are in step.h):
  both: a_t, s_t
  DDPM: posterior mean coefficients of x0 and x_t, log variance (min; max for learned), noise on (0/1)
  DDIM: a_prev, sqrt(1 - abar_prev - sigma^2), sigma
Unused columns are 0.
"""
from __future__ import annotations

import torch

from diffaug_fast.diffusion.schedules import Schedule, as_index_tensor
from diffaug_fast.ops import layout

VARIANCES = ("fixed_small", "fixed_large", "learned")


def _prev_alphas_cumprod(schedule: Schedule) -> torch.Tensor:
    ab = schedule.alphas_cumprod
    return torch.cat([ab.new_ones(1), ab[:-1]])


def step_coefficients(schedule: Schedule, i, *, mode: str = "ddpm", eta: float = 0.0,
                      variance: str = "fixed_small", device=None) -> torch.Tensor:
    """float32 [B, layout.STEP_COEFFICIENTS] coefficients for stepping from grid index ``i`` to ``i - 1``.

    ``variance`` (DDPM): 'fixed_small' (posterior variance), 'fixed_large' (beta_t, guided-diffusion's
    choice for the first step uses the posterior variance), or 'learned' (interpolated per element
    between the two logs by the network's extra output: pass ``learn_sigma=True`` to guided_step).
    ``eta`` (DDIM): 0 is deterministic, 1 has DDPM's posterior noise level.
    """
    if schedule.kind != "vp":
        raise ValueError("step_coefficients(): DDPM/DDIM steps need a VP schedule; got a VE schedule")
    if mode not in layout.STEP_MODES:
        raise ValueError(f"step_coefficients(): argument 'mode' is {mode!r}; expected 'ddpm' or 'ddim'")
    if variance not in VARIANCES:
        raise ValueError(f"step_coefficients(): argument 'variance' is {variance!r}; expected one of {VARIANCES}")
    if not (isinstance(eta, (int, float)) and eta >= 0):
        raise ValueError(f"step_coefficients(): argument 'eta' must be a number >= 0, got {eta!r}")
    i = as_index_tensor(i, len(schedule), device)
    if i.is_floating_point():
        raise TypeError("step_coefficients(): argument 't' must hold integer grid indices")
    ab = schedule.alphas_cumprod
    ab_prev = _prev_alphas_cumprod(schedule)
    idx = i.cpu().long()
    abar, abar_prev = ab[idx], ab_prev[idx]
    a, s = abar.sqrt(), (1 - abar).sqrt()
    coef = torch.zeros(len(idx), layout.STEP_COEFFICIENTS, dtype=torch.float64)
    coef[:, layout.COL_A], coef[:, layout.COL_S] = a, s
    if mode == "ddim":
        sigma = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)).clamp_min(0).sqrt()
        coef[:, layout.COL_DDIM_A_PREV] = abar_prev.sqrt()
        coef[:, layout.COL_DDIM_DIR] = (1 - abar_prev - sigma**2).clamp_min(0).sqrt()
        coef[:, layout.COL_DDIM_SIGMA] = sigma
    else:
        betas = 1 - ab / ab_prev
        post_var = betas * (1 - ab_prev) / (1 - ab)
        # log of the posterior variance, its t=0 value (0) replaced by t=1's as in improved-diffusion
        post_log = torch.log(torch.cat([post_var[1:2], post_var[1:]]))
        beta, alpha = betas[idx], 1 - betas[idx]
        coef[:, layout.COL_DDPM_MEAN_X0] = beta * abar_prev.sqrt() / (1 - abar)
        coef[:, layout.COL_DDPM_MEAN_XT] = (1 - abar_prev) * alpha.sqrt() / (1 - abar)
        if variance == "fixed_large":
            coef[:, layout.COL_DDPM_LOG_VAR_MIN] = torch.log(torch.cat([post_var[1:2], betas[1:]]))[idx]
        else:
            coef[:, layout.COL_DDPM_LOG_VAR_MIN] = post_log[idx]
        coef[:, layout.COL_DDPM_LOG_VAR_MAX] = torch.log(beta)
        coef[:, layout.COL_DDPM_NOISE] = (idx > 0).double()
    return coef.to(device=i.device, dtype=torch.float32)
