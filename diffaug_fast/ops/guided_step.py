"""Op ``guided_step``: one DDPM or DDIM reverse step with classifier guidance and its noise, in one pass."""
from __future__ import annotations

from typing import Optional

import torch

from diffaug_fast.ops import checks as _checks, extension as _build
from diffaug_fast.ops._layout import BatchLayout, canonical_input
from diffaug_fast.ops.backends import run_op
from diffaug_fast.ops.reference import STEP_MODES

_FN = "guided_step"


def guided_step(x_t: torch.Tensor, model_out: torch.Tensor, coef: torch.Tensor, *, mode: str = "ddpm",
                grad: torch.Tensor | None = None, scale: float = 1.0, clip: float | bool | None = None,
                learn_sigma: bool = False, seed: int | None = None, offset: int = 0,
                noise: torch.Tensor | None = None, backend: str | None = None) -> torch.Tensor:
    """``x_{t-1}`` from ``x_t`` and an eps-prediction, optionally guided by ``grad = ∇log p(y|x_t)``.

    Args:
        x_t: current samples ``[B, C, ...]``.
        model_out: the network's eps prediction; with ``learn_sigma=True`` ``[B, 2C, ...]`` whose second
            half interpolates the DDPM log-variance (Improved DDPM; DDIM ignores it). Read in place.
        coef: ``[B, 8]`` per-example coefficients from
            :func:`diffaug_fast.diffusion.step_coefficients` (they encode the schedule, step and eta).
        mode: 'ddpm' (ancestral; guidance shifts the mean by ``scale·Σ·grad``) or 'ddim'
            (guidance corrects eps by ``-sqrt(1-abar)·scale·grad``).
        grad, scale: classifier gradient and guidance scale; ``grad=None`` is unguided.
        clip: clamp the intermediate x0 estimate to ``[-clip, clip]`` (True: 1.0).
        seed, offset, noise: the step's noise, as in :func:`diffaug_fast.ops.diffuse`.
    """
    _checks.check_tensor(_FN, "x_t", x_t)
    _checks.check_tensor(_FN, "model_out", model_out)
    if mode not in STEP_MODES:
        raise ValueError(f"{_FN}(): argument 'mode' is {mode!r}; expected 'ddpm' or 'ddim'")
    _checks.check_model_output(_FN, x_t, model_out, learn_sigma)
    batch = x_t.shape[0]
    if not isinstance(coef, torch.Tensor) or coef.shape != (batch, 8):
        raise ValueError(f"{_FN}(): argument 'coef' must be a [{batch}, 8] tensor from step_coefficients(), "
                         f"got {getattr(coef, 'shape', type(coef).__name__)}")
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
    return run_op("guided_step", backend, x_t.device, x_t, eps, var_interp, grad, coef, noise, STEP_MODES[mode],
                  float(scale), clip, seed, offset)


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


# Sampling runs without autograd: fake impls only (torch.compile), no backward formula.
torch.library.register_fake("diffaug_fast::guided_step_triton")(_fake)
if _build.has_extension():
    torch.library.register_fake("diffaug_fast::guided_step")(_fake)
