"""The denoisers shipped inside the package."""
from __future__ import annotations

import json
from pathlib import Path

from diffaug_fast.diffusion import Denoiser, get_schedule
from diffaug_fast.diffusion.checkpoints import load_into, load_state_dict
from diffaug_fast.diffusion.unet import UNetModel

WEIGHTS_DIR = Path(__file__).parent / "weights"
MODELS = {"fmnist": "fmnist_vp", "fmnist-vp": "fmnist_vp"}


def pretrained(name: str = "fmnist", device="cpu") -> Denoiser:
    """An embedded denoiser (EMA weights) as a ``Denoiser`` in eval mode, e.g. ``pretrained("fmnist")``."""
    if name not in MODELS:
        raise ValueError(f"unknown pretrained model {name!r}; available: {', '.join(MODELS)}")
    weights = WEIGHTS_DIR / f"{MODELS[name]}.safetensors"
    if not weights.exists():
        raise FileNotFoundError(f"the embedded weights {weights.name} are not in this install; train them with "
                                "`diffaug-fast train-denoiser` and pass the exported file instead")
    config = json.loads(weights.with_suffix(".json").read_text())
    net = load_into(UNetModel(**config["unet"]), load_state_dict(weights), source=str(weights))
    denoiser = Denoiser(net, get_schedule(config["schedule"]), parametrization=config["parametrization"], clip=True)
    return denoiser.to(device).eval().requires_grad_(False)
