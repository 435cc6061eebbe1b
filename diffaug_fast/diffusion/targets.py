"""What a VP network is trained to predict, and how each example's error is weighted.

For ``x_t = a*x0 + s*eps`` (VP: a^2 + s^2 = 1, SNR = a^2 / s^2):

* ``eps``: the noise; plain eps-MSE (DDPM). In x0 terms that is SNR-weighted x0-MSE, so the x0 error at large t
  is the eps error times s/a: the 1/sqrt(alphabar) amplification that makes an eps-model's one-step x0 estimate
  worse than the mean image at t >= 600.
* ``v``: ``v = a*eps - s*x0`` (Salimans & Ho 2022); plain v-MSE, which is (SNR + 1)-weighted x0-MSE, the weighting
  of EDM with sigma_data = 1. The x0 estimate is ``a*x_t - s*v``: at large t the network outputs -x0 directly.
* ``x0``: the image itself; x0-MSE weighted by max(SNR, 1) ("truncated SNR", Salimans & Ho 2022): eps-MSE where
  the noise is small, plain x0-MSE where it is large.

The network output turns into x0 by :func:`diffaug_fast.ops.denoise_epilogue` with the same parametrization name.
"""
from __future__ import annotations

import torch

VP_PARAMETRIZATIONS = ("eps", "v", "x0")


def _check(parametrization: str) -> None:
    if parametrization not in VP_PARAMETRIZATIONS:
        raise ValueError(f"argument 'parametrization' is {parametrization!r}; expected one of "
                         f"{', '.join(VP_PARAMETRIZATIONS)}")


def _per_example(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.to(torch.float32).view(-1, *([1] * (x.dim() - 1)))


def training_target(parametrization: str, x0: torch.Tensor, eps: torch.Tensor, a: torch.Tensor,
                    s: torch.Tensor) -> torch.Tensor:
    """The exact network output for clean ``x0`` noised by ``eps`` with per-example coefficients ``a``, ``s`` [B]."""
    _check(parametrization)
    if parametrization == "eps":
        return eps
    if parametrization == "v":
        return _per_example(a, x0) * eps.float() - _per_example(s, x0) * x0.float()
    return x0  # "x0"


def loss_weight(parametrization: str, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor | None:
    """Per-example weight [B] of the squared error of the network output; None means 1 (a plain MSE)."""
    _check(parametrization)
    if parametrization in ("eps", "v"):
        return None
    return (a.to(torch.float32).square() / s.to(torch.float32).square()).clamp(min=1.0)  # "x0"


def prediction_loss(parametrization: str, pred: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor,
                    a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """The mean over all pixels of weight * (pred - target)^2, in float32."""
    target = training_target(parametrization, x0, eps, a, s)
    weight = loss_weight(parametrization, a, s)
    if weight is None:
        return torch.nn.functional.mse_loss(pred.float(), target.float())
    return (_per_example(weight, pred) * (pred.float() - target.float()).square()).mean()
