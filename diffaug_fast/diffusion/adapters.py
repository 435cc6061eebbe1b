"""diffusers models as Denoisers (diffusers is optional at run time)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from diffaug_fast.diffusion.denoiser import Denoiser
from diffaug_fast.diffusion.schedules import cosine_vp, linear_vp

_PREDICTION = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}


class DiffusersUNet(nn.Module):
    """``net(x, t)`` for a diffusers ``UNet2DModel`` (returns its ``.sample``)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t).sample


def _import_unet():
    try:
        from diffusers import UNet2DModel
    except ImportError as err:
        raise ImportError("loading a diffusers model needs diffusers: pip install diffusers") from err
    return UNet2DModel


def denoiser_from_diffusers(folder: str | Path, *, clip: bool = True) -> Denoiser:
    """A diffusers DDPM/DDIM pipeline folder (``unet/`` + ``scheduler/``) or a bare UNet folder (then DDPM's
    linear schedule) as a Denoiser; the scheduler config decides schedule, prediction type and learn_sigma."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"diffusers model folder {folder} does not exist")
    unet_dir = folder / "unet" if (folder / "unet").is_dir() else folder
    unet = _import_unet().from_pretrained(str(unet_dir), local_files_only=True)
    sched_file = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(sched_file.read_text()) if sched_file.exists() else {}
    steps = int(config.get("num_train_timesteps", 1000))
    kind = config.get("beta_schedule", "linear")
    if kind == "linear":
        schedule = linear_vp(steps, config.get("beta_start", 1e-4) * steps / 1000,
                             config.get("beta_end", 0.02) * steps / 1000)
    elif kind == "squaredcos_cap_v2":
        schedule = cosine_vp(steps)
    else:
        raise ValueError(f"{sched_file}: beta_schedule {kind!r} is not supported (linear, squaredcos_cap_v2)")
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in _PREDICTION:
        raise ValueError(f"{sched_file}: prediction_type {prediction!r} is not supported")
    learn_sigma = config.get("variance_type") in ("learned", "learned_range")
    return Denoiser(DiffusersUNet(unet), schedule, parametrization=_PREDICTION[prediction], learn_sigma=learn_sigma,
                    clip=clip)
