"""Classifiers of noisy images for guidance: the noisy classifier and the denoising-assisted (DA) classifier.

* ``NoisyClassifier``: a time-conditioned network on ``x_t`` alone (guided-diffusion's classifier recipe).
* ``DAClassifier``: the same kind of network fed ``x_t`` *and* the denoiser's ``x0_hat(x_t, t)``, fused
  - at the input (the paper's DA classifier): ``[c_t*x_t, x0_hat]`` stacked along channels by the fused
    ``concat_inputs`` op, with ``c_t = 1/sqrt(1 + sigma_t^2)`` so VE inputs have unit scale (VP: ``c_t = 1``);
  - or at the features: ``g(t)*h(x_t) + (1 - g(t))*h(x0_hat)`` through ``gated_fusion``, one shared trunk
    ``h`` and a learned per-channel gate ``g(t) = sigmoid(Linear(time embedding))``.

The gradient ``∇_{x_t} log p(y | x_t, x0_hat(x_t))`` needs a choice: ``gradient="full"`` back-propagates
through the denoiser as well (exact, one extra backward through the UNet); ``"stop"`` treats x0_hat as a
constant (cheaper). Guidance defaults to ``"full"``: the denoiser's Jacobian is what carries the
classifier's signal from the clean-image estimate back to x_t, and the paper's perceptually aligned
gradients come from it.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from diffaug_fast.models.classifiers import PreActBlock, norm_layer
from diffaug_fast.diffusion.denoiser import Denoiser
from diffaug_fast.ops import concat_inputs, gated_fusion

FUSIONS = ("input", "feature")
GRADIENTS = ("full", "stop")


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding [B, dim] of (possibly fractional) timesteps."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float().unsqueeze(1) * freqs
    emb = torch.cat([torch.cos(args), torch.sin(args)], 1)
    return torch.nn.functional.pad(emb, (0, dim % 2))


class TimeResNet(nn.Module):
    """A pre-activation ResNet whose blocks get a per-channel shift from the time embedding.

    ``features(x, t)`` returns pooled features [B, widths[-1]]; ``forward`` adds the linear head.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, widths=(32, 64, 128), blocks: int = 1,
                 norm: str = "group", time_dim: int = 128):
        super().__init__()
        self.time_dim = time_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.blocks, self.shifts = nn.ModuleList(), nn.ModuleList()
        cin = widths[0]
        for stage, width in enumerate(widths):
            for b in range(blocks):
                self.blocks.append(PreActBlock(cin, width, 2 if stage > 0 and b == 0 else 1, norm))
                self.shifts.append(nn.Linear(time_dim, cin))
                cin = width
        self.head_norm = norm_layer(norm, cin)
        self.fc = nn.Linear(cin, num_classes)
        self.num_features = cin

    def embed(self, t: torch.Tensor) -> torch.Tensor:
        return self.time_mlp(timestep_embedding(t, self.time_dim))

    def features(self, x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.embed(t) if emb is None else emb
        h = self.stem(x)
        for block, shift in zip(self.blocks, self.shifts):
            h = block(h + shift(emb)[:, :, None, None])
        return self.head_norm(h).relu().mean((2, 3))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x, t))


class NoisyClassifier(nn.Module):
    """``logits = net(x_t, t)``: trained on noisy images only."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x_t, t)


class DAClassifier(nn.Module):
    """``logits = f(x_t, x0_hat(x_t, t), t)``; the denoiser is frozen and not part of the state dict."""

    def __init__(self, net: TimeResNet, denoiser: Denoiser, *, fusion: str = "input", gradient: str = "full"):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"DAClassifier(): argument 'fusion' is {fusion!r}; expected one of {FUSIONS}")
        if gradient not in GRADIENTS:
            raise ValueError(f"DAClassifier(): argument 'gradient' is {gradient!r}; expected one of {GRADIENTS}")
        self.net, self.fusion, self.gradient = net, fusion, gradient
        object.__setattr__(self, "denoiser", denoiser.eval().requires_grad_(False))  # not a submodule
        if fusion == "feature":
            self.gate = nn.Linear(net.time_dim, net.num_features)

    def input_scale(self, t: torch.Tensor) -> torch.Tensor:
        """c_t: 1 for VP, 1/sqrt(1 + sigma^2) for VE (unit-scale network inputs)."""
        if self.denoiser.schedule.kind == "vp":
            return torch.ones(t.shape[0], device=t.device)
        sigma = self.denoiser.schedule.sigmas.to(t.device)[t.long()].float()
        return torch.rsqrt(1 + sigma.square())

    def denoised(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.gradient == "stop" or not torch.is_grad_enabled():
            with torch.no_grad():
                return self.denoiser(x_t, t)
        return self.denoiser(x_t, t)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, x0_hat: torch.Tensor | None = None) -> torch.Tensor:
        """Logits; pass ``x0_hat`` when it is already known (training reuses the DiffAug pass)."""
        x0_hat = self.denoised(x_t, t) if x0_hat is None else x0_hat
        if self.fusion == "input":
            return self.net(concat_inputs(x_t, x0_hat.to(x_t.dtype), self.input_scale(t), 1.0), t)
        emb = self.net.embed(t)
        scale = self.input_scale(t).view(-1, 1, 1, 1)
        h_t = self.net.features(x_t * scale, t, emb)
        h_0 = self.net.features(x0_hat.to(x_t.dtype), t, emb)
        return self.net.fc(gated_fusion(h_t, h_0, torch.sigmoid(self.gate(emb))))


def build_noisy_classifier(kind: str, denoiser: Denoiser | None = None, *, num_classes: int = 10,
                           in_channels: int = 1, fusion: str = "input", gradient: str = "full",
                           widths=(32, 64, 128)) -> nn.Module:
    """``kind="noisy"`` or ``"da"`` with the same trunk, so the two differ only in what they see."""
    if kind == "noisy":
        return NoisyClassifier(TimeResNet(num_classes, in_channels, widths))
    if kind == "da":
        if denoiser is None:
            raise ValueError("build_noisy_classifier(): a DA classifier needs the denoiser")
        channels = 2 * in_channels if fusion == "input" else in_channels
        return DAClassifier(TimeResNet(num_classes, channels, widths), denoiser, fusion=fusion, gradient=gradient)
    raise ValueError(f"build_noisy_classifier(): argument 'kind' is {kind!r}; expected 'noisy' or 'da'")
