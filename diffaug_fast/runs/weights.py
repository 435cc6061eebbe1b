"""The denoisers shipped inside the package, and rebuilding any exported one from its JSON config."""
from __future__ import annotations

import json
from pathlib import Path

from diffaug_fast.diffusion import Denoiser, get_schedule, ve_geometric
from diffaug_fast.diffusion.checkpoints import load_into, load_state_dict
from diffaug_fast.diffusion.unet import UNetModel
from diffaug_fast.diffusion.ve import VEScoreNet

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"  # diffaug_fast/weights: package data
MODELS = {"fmnist": "fmnist_vp", "fmnist-vp": "fmnist_vp", "fmnist-ve": "fmnist_ve"}
# A clean Fashion-MNIST classifier: FID/IS/KID feature extractor and judge of generated samples.
CLASSIFIERS = {"fmnist-classifier": "fmnist_classifier"}


def denoiser_from_config(config: dict, weights: str | Path | None = None) -> Denoiser:
    """A ``Denoiser`` from an exported config (``train-denoiser``'s ``ema.json``) and optional weights."""
    kind = config.get("kind", "vp")
    if kind == "ve":
        net = VEScoreNet(UNetModel(**config["unet"]), config["sigma_min"], config["sigma_max"],
                         config.get("sigma_data", 0.5))
        schedule = ve_geometric(1000, config["sigma_min"], config["sigma_max"])
    elif kind == "vp":
        net, schedule = UNetModel(**config["unet"]), get_schedule(config["schedule"])
    else:
        raise ValueError(f"denoiser config: 'kind' is {kind!r}; expected 'vp' or 've'")
    if weights is not None:
        net = load_into(net, load_state_dict(weights), source=str(weights))
    return Denoiser(net, schedule, parametrization=config["parametrization"],
                    condition=config.get("condition", "timestep"), clip=True)


def load_exported(weights: str | Path, device="cpu") -> Denoiser:
    """A denoiser exported by ``diffaug-fast train-denoiser`` (``ema.safetensors`` + ``ema.json``)."""
    weights = Path(weights)
    config_path = weights.with_suffix(".json")
    if not weights.exists() or not config_path.exists():
        raise FileNotFoundError(f"need both {weights} and {config_path} (written by `diffaug-fast train-denoiser`)")
    denoiser = denoiser_from_config(json.loads(config_path.read_text()), weights)
    return denoiser.to(device).eval().requires_grad_(False)


def pretrained(name: str = "fmnist", device="cpu") -> Denoiser:
    """An embedded denoiser (EMA weights) in eval mode: ``"fmnist"`` (= ``"fmnist-vp"``) or ``"fmnist-ve"``."""
    if name not in MODELS:
        raise ValueError(f"unknown pretrained model {name!r}; available: {', '.join(MODELS)}")
    weights = WEIGHTS_DIR / f"{MODELS[name]}.safetensors"
    if not weights.exists():
        raise FileNotFoundError(f"the embedded weights {weights.name} are not in this install; train them with "
                                "`diffaug-fast train-denoiser` and pass the exported file instead")
    return load_exported(weights, device)


def load_denoiser(source: str | Path, device="cpu") -> Denoiser:
    """A denoiser by the name of a shipped one (``fmnist``, ``fmnist-ve``) or the path of an exported
    ``ema.safetensors`` (``train-denoiser``), in eval mode with frozen weights."""
    return pretrained(str(source), device) if str(source) in MODELS else load_exported(source, device)
