"""VE (score-SDE style) networks, and the VP view of a VE chain that lets DDPM/DDIM steps sample them.

A VE model sees ``x = x0 + sigma*eps`` with sigma from 0.01 to 50. ``VEScoreNet`` wraps any
``net(x, c) -> y`` network so that it is conditioned on sigma alone and returns the score
``∇log p_sigma(x) = (D(x, sigma) - x) / sigma^2``. The denoiser D is preconditioned as in Karras et
al. (EDM): ``D = c_skip*x + c_out*net(c_in*x, c_noise)`` with ``c_in = 1/sqrt(sigma^2 + sd^2)``,
``c_skip = sd^2/(sigma^2 + sd^2)``, ``c_out = sigma*sd/sqrt(sigma^2 + sd^2)`` (sd: the data's std), so
the network's input and target have unit scale at every sigma. (A plain eps-network would make
``x0 = x - sigma*eps_hat``, whose error grows with sigma: at sigma = 50 it is worse than the mean
image.) ``c_noise`` maps log-sigma onto [0, 999] so a timestep-embedding UNet is reused unchanged.

``x_ve / sqrt(1 + sigma^2)`` is exactly a VP sample with ``alphabar = 1 / (1 + sigma^2)``, so the VP
equivalent schedule plus an eps-view of the network is all a VP sampler needs.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from diffaug_fast.diffusion.schedules import Schedule


def _per_example(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (x.dim() - 1)))


class VEScoreNet(nn.Module):
    def __init__(self, net: nn.Module, sigma_min: float = 0.01, sigma_max: float = 50.0, sigma_data: float = 0.5):
        super().__init__()
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"VEScoreNet(): need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.net = net
        self.sigma_min, self.sigma_max, self.sigma_data = float(sigma_min), float(sigma_max), float(sigma_data)

    def conditioning(self, sigma: torch.Tensor) -> torch.Tensor:
        span = math.log(self.sigma_max / self.sigma_min)
        return 999.0 * (sigma.float().log() - math.log(self.sigma_min)) / span

    def preconditioning(self, sigma: torch.Tensor):
        """(c_in, c_skip, c_out) per example, float32 [B]."""
        sigma = sigma.float()
        sd2 = self.sigma_data**2
        norm = torch.rsqrt(sigma.square() + sd2)
        return norm, sd2 * norm.square(), sigma * self.sigma_data * norm

    def raw(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The wrapped network's output F(c_in*x, c_noise): what training regresses."""
        c_in, _, _ = self.preconditioning(sigma)
        return self.net(x * _per_example(c_in, x).to(x.dtype), self.conditioning(sigma))

    def training_target(self, x: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The F that makes D(x) = x0 exactly: (x0 - c_skip*x) / c_out."""
        _, c_skip, c_out = self.preconditioning(sigma)
        return (x0 - _per_example(c_skip, x) * x) / _per_example(c_out, x)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """D(x, sigma), the x0 estimate."""
        _, c_skip, c_out = self.preconditioning(sigma)
        return _per_example(c_skip, x) * x.float() + _per_example(c_out, x) * self.raw(x, sigma).float()

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The score ∇log p_sigma(x) = (D(x, sigma) - x) / sigma^2."""
        sigma = sigma.float()
        return (self.denoise(x, sigma) - x.float()) / _per_example(sigma.square(), x)


def vp_equivalent(schedule: Schedule) -> Schedule:
    """The VP chain with the same noise-to-signal ratio at every grid index (timesteps kept)."""
    if schedule.kind != "ve":
        raise ValueError("vp_equivalent(): expects a VE schedule")
    sigma = schedule.sigmas
    norm = torch.rsqrt(1 + sigma.square())
    return Schedule("vp", norm, sigma * norm, schedule.timesteps, f"{schedule.name}-as-vp")
