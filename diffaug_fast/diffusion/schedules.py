"""Noise schedules as data plus a few pure functions.

A schedule is a grid of N steps, each with a signal scale ``a`` and a noise scale
``s`` so that ``x_t = a_t*x0 + s_t*eps``:

* VP (DDPM / Improved-DDPM): ``a = sqrt(alphabar)``, ``s = sqrt(1 - alphabar)``;
* VE (score-SDE / NCSN): ``a = 1``, ``s = sigma``.

``timesteps`` maps each grid index to the timestep the network was trained
with; respacing (fewer sampling steps) keeps a subset of the grid and its
original timesteps. Non-integer ``t`` interpolates log(s^2/a^2), the
log noise-to-signal ratio, linearly between neighbouring grid points (exact for VE's geometric grid).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_F64 = torch.float64


@dataclass(frozen=True)
class Schedule:
    kind: str  # "vp" or "ve"
    signal: torch.Tensor  # a_t, float64 [N]
    noise: torch.Tensor  # s_t, float64 [N]
    timesteps: torch.Tensor  # int64 [N]: the network's timestep for each grid index
    name: str = ""

    def __len__(self) -> int:
        return self.signal.shape[0]

    @property
    def num_steps(self) -> int:
        return len(self)

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """alphabar_t = a_t^2 (VP)."""
        return self.signal**2

    @property
    def betas(self) -> torch.Tensor:
        """Per-step betas of the (possibly respaced) VP chain: 1 - alphabar_t / alphabar_{t-1}."""
        ab = self.alphas_cumprod
        prev = torch.cat([ab.new_ones(1), ab[:-1]])
        return 1.0 - ab / prev

    @property
    def sigmas(self) -> torch.Tensor:
        """Noise level in the VE sense, s_t / a_t (the sigma of x_t / a_t = x0 + sigma*eps)."""
        return self.noise / self.signal

    def coefficients(self, t, *, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example (a_t, s_t) as float32 [B] tensors for grid indices ``t`` (int or float, [B])."""
        t = as_index_tensor(t, len(self), device)
        if not t.is_floating_point():
            a, s = self.signal.to(t.device)[t], self.noise.to(t.device)[t]
        else:
            log_nsr = torch.log(self.noise**2) - torch.log(self.signal**2)
            log_nsr = log_nsr.to(t.device)
            lo = t.floor().long().clamp(max=len(self) - 1)
            hi = (lo + 1).clamp(max=len(self) - 1)
            w = t.to(_F64) - lo.to(_F64)
            lam = (1 - w) * log_nsr[lo] + w * log_nsr[hi]
            if self.kind == "vp":
                a, s = torch.sqrt(torch.sigmoid(-lam)), torch.sqrt(torch.sigmoid(lam))
            else:
                a, s = torch.ones_like(lam), torch.exp(0.5 * lam)
        return a.to(torch.float32), s.to(torch.float32)

    def model_timesteps(self, t) -> torch.Tensor:
        """The network's conditioning timestep for integer grid indices t."""
        t = as_index_tensor(t, len(self), None)
        return self.timesteps.to(t.device)[t.long()]


def as_index_tensor(t, n: int, device) -> torch.Tensor:
    """Timesteps ``t`` (a number, list or tensor) as a checked 1-D tensor (one per example) on ``device``.

    Integer grid indices stay integer, fractional ones floating; every value must lie in ``[0, n - 1]``
    (checked only outside torch.compile, where reading the values would break the graph).
    """
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        t = torch.tensor([t])
    elif isinstance(t, (list, tuple)):
        t = torch.tensor(t)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"argument 't' must be a tensor, list or number of timesteps, got {type(t).__name__}")
    if device is not None:
        t = t.to(device)
    if t.dim() != 1:
        raise ValueError(f"argument 't' must be 1-D (one timestep per example), got shape {list(t.shape)}")
    if t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"argument 't' has dtype {t.dtype}; expected an integer or floating dtype")
    if t.numel() and not torch.compiler.is_compiling():
        lo, hi = float(t.min()), float(t.max())
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0 or hi > n - 1:
            raise ValueError(f"argument 't' must lie in [0, {n - 1}] for this {n}-step schedule, "
                             f"got values in [{lo:g}, {hi:g}]")
    return t


def _vp(alphas_cumprod: torch.Tensor, name: str) -> Schedule:
    ab = alphas_cumprod.to(_F64)
    n = ab.shape[0]
    return Schedule("vp", ab.sqrt(), (1.0 - ab).sqrt(), torch.arange(n), name)


def linear_vp(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
    """DDPM's linear betas, scaled by 1000/num_steps so that shorter chains keep the same end points."""
    _check_steps(num_steps)
    scale = 1000.0 / num_steps
    betas = torch.linspace(scale * beta_start, scale * beta_end, num_steps, dtype=_F64)
    return _vp(torch.cumprod(1.0 - betas, 0), f"linear{num_steps}")


def cosine_vp(num_steps: int = 1000, offset: float = 0.008, max_beta: float = 0.999) -> Schedule:
    """Improved-DDPM's cosine schedule: alphabar(u) = cos^2((u + offset)/(1 + offset) * pi/2), betas capped."""
    _check_steps(num_steps)
    u = torch.arange(num_steps + 1, dtype=_F64) / num_steps
    f = torch.cos((u + offset) / (1 + offset) * math.pi / 2) ** 2
    betas = torch.clamp(1.0 - f[1:] / f[:-1], max=max_beta)
    return _vp(torch.cumprod(1.0 - betas, 0), f"cosine{num_steps}")


def ve_geometric(num_steps: int = 1000, sigma_min: float = 0.01, sigma_max: float = 50.0) -> Schedule:
    """Score-SDE's VE noise levels: sigma_i = sigma_min * (sigma_max/sigma_min)^(i/(N-1))."""
    _check_steps(num_steps)
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"ve_geometric(): need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    u = torch.arange(num_steps, dtype=_F64) / max(num_steps - 1, 1)
    sigmas = sigma_min * (sigma_max / sigma_min) ** u
    return Schedule("ve", torch.ones_like(sigmas), sigmas, torch.arange(num_steps), f"ve{num_steps}")


SCHEDULES = {"linear": linear_vp, "cosine": cosine_vp, "ve": ve_geometric}


def get_schedule(name: str, num_steps: int = 1000) -> Schedule:
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; expected one of {', '.join(SCHEDULES)}")
    return SCHEDULES[name](num_steps)


def space_timesteps(num_steps: int, spec: str | int | list[int]) -> list[int]:
    """Grid indices to keep when respacing an N-step chain (improved-diffusion's conventions).

    ``"ddimK"``: the stride whose ``range(0, N, stride)`` has exactly K elements.
    ``"K"`` or ``K``: K steps spread evenly over the whole chain (first and last kept).
    ``"K1,K2,..."``: the chain split into equal sections with K_i evenly spread steps each.
    """
    try:
        return _space_timesteps(num_steps, spec)
    except ValueError as err:
        if "invalid literal" not in str(err):
            raise
        raise ValueError(f"argument 'steps' is {spec!r}; expected 'ddimN' (N evenly strided steps), an integer N, "
                         "or comma-separated step counts per section such as '10,10,5'") from None


def _space_timesteps(num_steps: int, spec) -> list[int]:
    if isinstance(spec, str) and spec.startswith("ddim"):
        want = int(spec[len("ddim"):])
        for stride in range(1, num_steps):
            if len(range(0, num_steps, stride)) == want:
                return list(range(0, num_steps, stride))
        raise ValueError(f"cannot take exactly {want} evenly strided steps from {num_steps}")
    counts = [int(c) for c in str(spec).split(",")] if not isinstance(spec, list) else list(spec)
    section = num_steps // len(counts)
    extra = num_steps % len(counts)
    kept, start = [], 0
    for i, count in enumerate(counts):
        size = section + (1 if i < extra else 0)
        if not 0 < count <= size:
            raise ValueError(f"cannot take {count} steps from a section of {size}")
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        kept += [start + round(stride * j) for j in range(count)]
        start += size
    return sorted(set(kept))


def respace(schedule: Schedule, spec: str | int | list[int]) -> Schedule:
    """The sub-chain at the kept grid indices; timesteps still name the network's original ones."""
    keep = torch.tensor(space_timesteps(len(schedule), spec))
    return Schedule(schedule.kind, schedule.signal[keep], schedule.noise[keep], schedule.timesteps[keep],
                    f"{schedule.name}-respaced{len(keep)}")


def _check_steps(num_steps: int) -> None:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"argument 'num_steps' must be a positive int, got {num_steps!r}")
