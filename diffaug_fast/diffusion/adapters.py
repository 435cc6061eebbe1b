"""diffusers models as Denoisers (diffusers is optional at run time)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from diffaug_fast.diffusion.checkpoints import CheckpointError
from diffaug_fast.diffusion.denoiser import Denoiser
from diffaug_fast.diffusion.schedules import cosine_vp, linear_vp

_PREDICTION = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}


class DiffusersUNet(nn.Module):
    """``net(x, t)`` for a diffusers ``UNet2DModel`` (returns its ``.sample``); records the image size and
    channels it was built for and, being fully convolutional, the multiple its sizes must be (one 2x
    downsampling per down block but the last)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet
        config = unet.config
        size = config.sample_size
        size = size[0] if isinstance(size, (list, tuple)) and len(set(size)) == 1 else size
        self.image_size = size if isinstance(size, int) else None
        self.in_channels = config.in_channels
        self.size_multiple = 2 ** (len(config.down_block_types) - 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t).sample


def _import_unet():
    try:
        from diffusers import UNet2DModel
    except ImportError as err:
        raise ImportError("loading a diffusers model needs diffusers: pip install diffusers") from err
    return UNet2DModel


def _low_cpu_mem_usage() -> bool:
    """diffusers' default (True) without accelerate installed logs a six-line "pip install accelerate" warning on
    every load and falls back to False anyway: ask for False up front then, and keep the fast path with it."""
    from diffusers.utils import is_accelerate_available

    return is_accelerate_available()


def _first(*paths: Path) -> Path | None:
    return next((p for p in paths if p.is_file()), None)


def denoiser_from_diffusers(folder: str | Path, *, clip: bool = True) -> Denoiser:
    """A diffusers DDPM/DDIM pipeline folder (``unet/`` + ``scheduler/``, or both configs side by side as in
    google/ddpm-cifar10-32) or a bare UNet folder (then DDPM's linear schedule) as a Denoiser; the scheduler
    config decides schedule, prediction type and learn_sigma. A folder without a ``UNet2DModel``, a
    class-conditional UNet or an unsupported scheduler raises CheckpointError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"diffusers model folder {folder} does not exist")
    unet_config = _first(folder / "unet" / "config.json", folder / "config.json")
    if unet_config is None:
        raise CheckpointError(f"{folder} holds no diffusers UNet (expected unet/config.json or config.json of a "
                              "UNet2DModel, as save_pretrained writes them)")
    try:
        described = json.loads(unet_config.read_text())
    except ValueError as err:
        raise CheckpointError(f"{unet_config} is not valid JSON ({err})") from None
    kind = described.get("_class_name") if isinstance(described, dict) else None
    if kind != "UNet2DModel":
        raise CheckpointError(f"{unet_config} describes a {kind or 'model of unknown class'}, not a UNet2DModel: "
                              "only pixel-space, unconditional diffusers UNets can denoise images here")
    if described.get("num_class_embeds") or described.get("class_embed_type"):
        raise CheckpointError(f"{unet_config}: class-conditional diffusers UNets are not supported")
    try:
        unet = _import_unet().from_pretrained(str(unet_config.parent), local_files_only=True,
                                                 low_cpu_mem_usage=_low_cpu_mem_usage())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{unet_config.parent}: diffusers could not load the UNet ({str(err).splitlines()[0]})") \
            from None
    sched_file = _first(folder / "scheduler" / "scheduler_config.json", folder / "scheduler_config.json")
    config = json.loads(sched_file.read_text()) if sched_file is not None else {}
    steps = int(config.get("num_train_timesteps", 1000))
    kind = config.get("beta_schedule", "linear")
    if kind == "linear":
        schedule = linear_vp(steps, config.get("beta_start", 1e-4) * steps / 1000,
                             config.get("beta_end", 0.02) * steps / 1000)
    elif kind == "squaredcos_cap_v2":
        schedule = cosine_vp(steps)
    else:
        raise CheckpointError(f"{sched_file}: beta_schedule {kind!r} is not supported (linear, squaredcos_cap_v2)")
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in _PREDICTION:
        raise CheckpointError(f"{sched_file}: prediction_type {prediction!r} is not supported "
                              f"({', '.join(_PREDICTION)})")
    learn_sigma = config.get("variance_type") in ("learned", "learned_range")
    return Denoiser(DiffusersUNet(unet), schedule, parametrization=_PREDICTION[prediction], learn_sigma=learn_sigma,
                    clip=clip)
