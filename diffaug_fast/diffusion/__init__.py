"""Diffusion processes: schedules, the forward/denoise helpers built on the fused ops, Denoiser."""
from diffaug_fast.diffusion.denoiser import Denoiser
from diffaug_fast.diffusion.process import predict_x0, q_sample
from diffaug_fast.diffusion.steps import step_coefficients
from diffaug_fast.diffusion.schedules import (Schedule, cosine_vp, get_schedule, linear_vp, respace, space_timesteps,
                                              ve_geometric)

__all__ = ["Denoiser", "Schedule", "cosine_vp", "get_schedule", "linear_vp", "predict_x0", "q_sample", "respace",
           "space_timesteps", "step_coefficients", "ve_geometric"]
