"""Forward diffusion and x0 recovery at schedule timesteps, through the fused ops."""
from __future__ import annotations

import torch

from diffaug_fast.diffusion.schedules import Schedule
from diffaug_fast.ops import denoise_epilogue, diffuse


def q_sample(schedule: Schedule, x0: torch.Tensor, t, *, seed: int | None = None, offset: int = 0,
             noise: torch.Tensor | None = None, return_noise: bool = False, backend: str | None = None):
    """Sample ``x_t ~ q(x_t | x0)`` at per-example grid indices ``t`` (see :func:`diffaug_fast.ops.diffuse`)."""
    a, s = schedule.coefficients(t, device=x0.device)
    return diffuse(x0, a, s, seed=seed, offset=offset, noise=noise, return_noise=return_noise, backend=backend)


def predict_x0(schedule: Schedule, x_t: torch.Tensor, t, model_out: torch.Tensor, *, parametrization: str = "eps",
               clip: float | bool | None = None, learn_sigma: bool = False, backend: str | None = None):
    """x0 estimate from a network output at grid indices ``t`` (see :func:`diffaug_fast.ops.denoise_epilogue`)."""
    a, s = schedule.coefficients(t, device=x_t.device)
    return denoise_epilogue(x_t, model_out, a, s, parametrization=parametrization, clip=clip,
                            learn_sigma=learn_sigma, backend=backend)
