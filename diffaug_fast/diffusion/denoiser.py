"""Denoiser: a network, its schedule and its parametrization, giving x0_hat(x_t, t) in one fused pass.

Any ``nn.Module`` called as ``net(x_t, cond)`` fits, where ``cond`` is the network's own timestep
(respaced chains keep the original ones) or, for VE score networks, the noise level sigma.
"""
from __future__ import annotations

import torch
from torch import nn

from diffaug_fast.diffusion.schedules import Schedule
from diffaug_fast.ops import PARAMETRIZATIONS, denoise_epilogue

CONDITIONS = ("timestep", "sigma")


class Denoiser(nn.Module):
    def __init__(self, net: nn.Module, schedule: Schedule, *, parametrization: str = "eps",
                 learn_sigma: bool = False, condition: str = "timestep", clip: float | bool | None = True):
        super().__init__()
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"Denoiser(): argument 'parametrization' is {parametrization!r}; "
                             f"expected one of {', '.join(PARAMETRIZATIONS)}")
        if condition not in CONDITIONS:
            raise ValueError(f"Denoiser(): argument 'condition' is {condition!r}; expected one of {CONDITIONS}")
        if parametrization == "v" and schedule.kind == "ve":
            raise ValueError("Denoiser(): v-parametrization is defined for VP schedules only")
        self.net = net
        self.schedule = schedule
        self.parametrization = parametrization
        self.learn_sigma = learn_sigma
        self.condition = condition
        self.clip = clip

    def _described_net(self) -> nn.Module:
        """The network that records its image size (wrappers such as a VE score network hold it as ``net``)."""
        net = self.net
        return getattr(net, "net", net) if not hasattr(net, "image_size") else net

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """(channels, height, width) of the images the network was built for (its nominal size: samplers draw
        this shape), when it records them (our UNets do; a VE score network wraps one); None for networks that
        take any size. A fully convolutional UNet also takes other sizes: see :meth:`shape_problem`."""
        net = self._described_net()
        size, channels = getattr(net, "image_size", None), getattr(net, "in_channels", None)
        return (channels, size, size) if isinstance(size, int) and isinstance(channels, int) else None

    def shape_problem(self, shape) -> str | None:
        """Why images of ``shape`` (C, H, W) cannot go through the network, or None when they can. The channels
        must be the network's; a fully convolutional UNet (one that records ``size_multiple``, 2 to the number of
        its downsamplings) takes any H, W divisible by it, as the official DiffAug ImageNet recipe runs the
        256x256 model at 224x224; a network without ``size_multiple`` takes its nominal size only."""
        nominal = self.image_shape
        if nominal is None:
            return None
        channels, height, width = (int(v) for v in shape)
        if channels != nominal[0]:
            return f"the network takes {nominal[0]}-channel images, the data have {channels} channels"
        multiple = getattr(self._described_net(), "size_multiple", None)
        if multiple is None and (height, width) != nominal[1:]:
            return f"the network takes {nominal[1]}x{nominal[2]} images only, the data are {height}x{width}"
        if multiple is not None and (height % multiple or width % multiple):
            return (f"the network (built for {nominal[1]}x{nominal[2]}, {multiple.bit_length() - 1} downsamplings) "
                    f"takes image sizes divisible by {multiple}, the data are {height}x{width}")
        return None

    def conditioning(self, t: torch.Tensor) -> torch.Tensor:
        """What the network is called with for grid indices t."""
        if self.condition == "sigma":
            return self.schedule.sigmas.to(t.device)[t.long()].to(torch.float32)
        return self.schedule.model_timesteps(t)

    def model_output(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.net(x_t, self.conditioning(t))
        channels = x_t.shape[1] * (2 if self.learn_sigma else 1)
        if out.shape[0] != x_t.shape[0] or out.shape[1] != channels or out.shape[2:] != x_t.shape[2:]:
            raise ValueError(f"Denoiser: the network returned shape {list(out.shape)} for x_t of shape "
                             f"{list(x_t.shape)}; a {self.parametrization}-network"
                             f"{' with learn_sigma' if self.learn_sigma else ''} must return "
                             f"{[x_t.shape[0], channels, *x_t.shape[2:]]}")
        return out

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x0_hat for x_t at grid indices t (integer, [B])."""
        return self.predict(x_t, t)[0]

    def predict(self, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0_hat, raw network output): samplers reuse the output, DiffAug keeps only x0_hat."""
        out = self.model_output(x_t, t)
        a, s = self.schedule.coefficients(t, device=x_t.device)
        x0 = denoise_epilogue(x_t, out, a, s, parametrization=self.parametrization, clip=self.clip,
                              learn_sigma=self.learn_sigma)
        return x0, out
