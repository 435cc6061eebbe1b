"""VE (score-SDE style) networks, and the VP view of a VE chain that lets DDPM/DDIM steps sample them.

A VE model sees ``x = x0 + sigma*eps`` with sigma from 0.01 to 50. ``VEScoreNet`` wraps any
``net(x, c) -> eps`` network so that it is conditioned on sigma alone: the input is scaled to unit
variance (``x / sqrt(1 + sigma^2)``), the conditioning value is log-sigma mapped onto [0, 999] (so a
timestep-embedding UNet can be reused unchanged), and the output is the score ``-eps / sigma``.
Training it with ``|eps_hat - eps|^2`` is score-SDE's sigma^2-weighted denoising score matching.

``x_ve / sqrt(1 + sigma^2)`` is exactly a VP sample with ``alphabar = 1 / (1 + sigma^2)``, so the VP
equivalent schedule plus an eps-view of the network is all a VP sampler needs.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from diffaug_fast.diffusion.schedules import Schedule


class VEScoreNet(nn.Module):
    def __init__(self, net: nn.Module, sigma_min: float = 0.01, sigma_max: float = 50.0):
        super().__init__()
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"VEScoreNet(): need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.net = net
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)

    def conditioning(self, sigma: torch.Tensor) -> torch.Tensor:
        span = math.log(self.sigma_max / self.sigma_min)
        return 999.0 * (sigma.float().log() - math.log(self.sigma_min)) / span

    def eps(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """eps_hat(x0 + sigma*eps, sigma), sigma per example [B]."""
        scale = torch.rsqrt(1 + sigma.float().square()).view(-1, *([1] * (x.dim() - 1)))
        return self.net(x * scale.to(x.dtype), self.conditioning(sigma))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The score ∇log p_sigma(x) = -eps_hat / sigma."""
        sigma = sigma.float()
        eps = self.eps(x, sigma)
        return -eps / sigma.view(-1, *([1] * (x.dim() - 1))).to(eps.dtype)


def vp_equivalent(schedule: Schedule) -> Schedule:
    """The VP chain with the same noise-to-signal ratio at every grid index (timesteps kept)."""
    if schedule.kind != "ve":
        raise ValueError("vp_equivalent(): expects a VE schedule")
    sigma = schedule.sigmas
    norm = torch.rsqrt(1 + sigma.square())
    return Schedule("vp", norm, sigma * norm, schedule.timesteps, f"{schedule.name}-as-vp")
