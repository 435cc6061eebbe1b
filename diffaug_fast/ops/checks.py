"""Argument checks shared by the public API: each error names the argument and what was expected."""
from __future__ import annotations

import numpy as np
import torch

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_DTYPE_NAMES = "float32, bfloat16 or float16"
MAX_SEED = 2**63 - 1


def _eager() -> bool:
    # Value checks that read tensor data would break torch.compile graphs; shapes are still checked.
    return not torch.compiler.is_compiling()


def check_tensor(fn: str, name: str, t, *, min_dim: int = 1, dtypes=FLOAT_DTYPES) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{fn}(): argument '{name}' must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() < min_dim:
        raise ValueError(f"{fn}(): argument '{name}' must have at least {min_dim} dimension(s) "
                         f"(batch first), got shape {list(t.shape)}")
    if dtypes is not None and t.dtype not in dtypes:
        raise TypeError(f"{fn}(): argument '{name}' has dtype {t.dtype}; expected {_DTYPE_NAMES}")


def check_same_device(fn: str, ref_name: str, ref: torch.Tensor, **others) -> None:
    for name, t in others.items():
        if t is not None and t.device != ref.device:
            raise ValueError(f"{fn}(): argument '{name}' is on {t.device} but '{ref_name}' is on {ref.device}; "
                             "move them to the same device")


def per_example(fn: str, name: str, coef, batch: int, device: torch.device) -> torch.Tensor:
    """A per-example coefficient as a float32 [batch] tensor on `device` (scalars are broadcast)."""
    if isinstance(coef, (int, float)):
        coef = torch.full((batch,), float(coef), device=device)
    if not isinstance(coef, torch.Tensor):
        raise TypeError(f"{fn}(): argument '{name}' must be a tensor of shape [{batch}] or a number, "
                        f"got {type(coef).__name__}")
    if coef.dim() != 1 or coef.shape[0] != batch:
        raise ValueError(f"{fn}(): argument '{name}' must have shape [{batch}] (one value per example), "
                         f"got {list(coef.shape)}")
    if coef.device != device:
        raise ValueError(f"{fn}(): argument '{name}' is on {coef.device}; expected {device} like the images")
    if coef.is_complex() or not (coef.is_floating_point() or coef.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{fn}(): argument '{name}' has dtype {coef.dtype}; expected a real dtype")
    return coef.detach().to(torch.float32)


def check_coefficients(fn: str, a: torch.Tensor, s: torch.Tensor, *, a_nonzero: bool = False) -> None:
    """a and s finite (and a free of zeros if asked), with one host sync for the common, valid case."""
    if not _eager() or a.numel() == 0:
        return
    if a.device.type == "cpu":  # numpy: a few microseconds instead of several small torch ops
        a_np, s_np = a.numpy(), s.numpy()
        if np.isfinite(a_np).all() and np.isfinite(s_np).all() and not (a_nonzero and (a_np == 0).any()):
            return
    else:
        ok = torch.isfinite(a) & torch.isfinite(s)
        if a_nonzero:
            ok &= a != 0
        if bool(ok.all()):
            return
    for name, coef in (("a", a), ("s", s)):
        if not bool(torch.isfinite(coef).all()):
            raise ValueError(f"{fn}(): argument '{name}' contains NaN or Inf")
    raise ValueError(f"{fn}(): argument 'a' has zeros; x0 cannot be recovered from this parametrization "
                     "when the signal scale is 0")


def resolve_seed(fn: str, seed, offset) -> int:
    """The seed to use (None draws one from torch's global generator), checked together with the offset."""
    if seed is None:
        seed = int(torch.randint(0, 2**62, ()).item())
    check_seed(fn, seed, offset)
    return seed


def check_seed(fn: str, seed, offset) -> None:
    for name, value in (("seed", seed), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{fn}(): argument '{name}' must be an int, got {type(value).__name__}")
        if not 0 <= value <= MAX_SEED:
            raise ValueError(f"{fn}(): argument '{name}' must be in [0, 2**63 - 1], got {value}")


def check_finite(fn: str, name: str, t: torch.Tensor) -> None:
    if _eager() and t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{fn}(): argument '{name}' contains NaN or Inf")


def check_model_output(fn: str, x_t: torch.Tensor, model_out: torch.Tensor, learn_sigma: bool) -> None:
    """model_out has x_t's shape, or twice its channels with learn_sigma."""
    expected = list(x_t.shape)
    if learn_sigma:
        if x_t.dim() < 2:
            raise ValueError(f"{fn}(): learn_sigma=True needs a channel dimension; x_t has shape {expected}")
        expected[1] *= 2
    if list(model_out.shape) == expected:
        return
    if learn_sigma:
        hint = " (learn_sigma=True: twice the channels of x_t)"
    elif x_t.dim() >= 2 and model_out.dim() == x_t.dim() and model_out.shape[1] == 2 * x_t.shape[1]:
        hint = "; a network with learn_sigma outputs twice the channels: pass learn_sigma=True"
    else:
        hint = ""
    raise ValueError(f"{fn}(): argument 'model_out' must have shape {expected}{hint}, got {list(model_out.shape)}")


def clip_limit(fn: str, clip) -> float | None:
    """The clamp limit: True means 1.0 (the image range), False/None no clamp, else a positive number."""
    clip = 1.0 if clip is True else (None if clip is False else clip)
    if clip is not None and not (isinstance(clip, (int, float)) and clip > 0):
        raise ValueError(f"{fn}(): argument 'clip' must be a positive number, True or None, got {clip!r}")
    return None if clip is None else float(clip)
