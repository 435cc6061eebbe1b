"""The denoisers shipped inside the package, and rebuilding any exported one from its JSON config."""
from __future__ import annotations

import json
from pathlib import Path

from diffaug_fast.diffusion import Denoiser, get_schedule, ve_geometric
from diffaug_fast.diffusion.checkpoints import CheckpointError, load_into, load_state_dict, released_denoiser
from diffaug_fast.diffusion.unet import UNetModel
from diffaug_fast.diffusion.ve import VEScoreNet
from diffaug_fast.errors import DiffAugError

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"  # diffaug_fast/weights: package data
MODELS = {"fmnist": "fmnist_vp", "fmnist-vp": "fmnist_vp", "fmnist-v": "fmnist_vp_v", "fmnist-ve": "fmnist_ve"}
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


RELEASED_SUFFIXES = (".pt", ".pth", ".safetensors")
DENOISER_FORMS = ("fmnist | fmnist-v | fmnist-ve, a train-denoiser export (.safetensors + .json), a released "
                  ".pt/.safetensors checkpoint with --denoiser-flags, or a diffusers folder")
FLAGS_EXAMPLE = ("--denoiser-flags \"--attention_resolutions 32,16,8 --class_cond False --diffusion_steps 1000 "
                 "--image_size 256 --learn_sigma True --noise_schedule linear ...\"")


def load_denoiser(source: str | Path, device="cpu", flags: str | None = None, *,
                  option: str = "--denoiser") -> Denoiser:
    """A denoiser in eval mode with frozen weights, from

    * the name of a shipped one (``fmnist``, ``fmnist-ve``);
    * ``*.safetensors`` with its sibling ``.json`` (``train-denoiser``'s export), when no ``flags`` are given;
    * a released guided-diffusion / improved-diffusion checkpoint (``.pt`` / ``.safetensors``) with ``flags``, the
      flag line it was trained with (see :func:`~diffaug_fast.diffusion.checkpoints.released_denoiser`);
    * a diffusers folder: a ``UNet2DModel`` saved alone, or a pipeline folder with ``unet/`` and ``scheduler/``.

    ``option`` is the command-line option that named ``source`` (for error messages); every mistake is one line
    naming it, or ``--denoiser-flags``."""
    name, path, flags = str(source), Path(source), flags or None
    if name in MODELS or path.is_dir():
        if flags:
            what = "a shipped model" if name in MODELS else "a diffusers folder (its config.json files describe it)"
            raise DiffAugError(f"argument --denoiser-flags: {option} {name} is {what}; --denoiser-flags describes a "
                               "released guided-diffusion / improved-diffusion .pt or .safetensors checkpoint only")
        if name in MODELS:
            return pretrained(name, device)
        from diffaug_fast.diffusion.adapters import denoiser_from_diffusers

        try:
            denoiser = denoiser_from_diffusers(path)
        except ImportError as err:
            raise DiffAugError(f"argument {option} {name}: {err}") from None
        except (CheckpointError, ValueError, FileNotFoundError) as err:
            raise CheckpointError(f"argument {option}: {err}") from None
        return denoiser.to(device).eval().requires_grad_(False)
    if not path.exists():
        raise FileNotFoundError(f"argument {option}: {name} does not exist; expected {DENOISER_FORMS}")
    if flags is None:
        if path.suffix not in RELEASED_SUFFIXES:  # a text file, a picture: say what a denoiser is, not which .json
            raise DiffAugError(f"argument {option}: {name} is not a denoiser; expected {DENOISER_FORMS}")
        if path.suffix in RELEASED_SUFFIXES and path.is_file() and not path.with_suffix(".json").exists():
            raise DiffAugError(f"argument {option} {name}: a released guided-diffusion / improved-diffusion "
                               f"checkpoint needs the flag line it was trained with, e.g. {FLAGS_EXAMPLE} (or, for "
                               "a train-denoiser export, its .json beside it)")
        try:
            return load_exported(path, device)
        except (CheckpointError, FileNotFoundError) as err:
            raise type(err)(f"argument {option}: {err}") from None
    if path.suffix not in RELEASED_SUFFIXES:
        raise DiffAugError(f"argument {option} {name}: with --denoiser-flags expected a released checkpoint "
                           f"({', '.join(RELEASED_SUFFIXES)}), a shipped name or a diffusers folder")
    try:
        state = load_state_dict(path)
    except (CheckpointError, FileNotFoundError) as err:
        raise type(err)(f"argument {option}: {err}") from None
    try:
        denoiser = released_denoiser(state, flags, device=device, source=name)
    except CheckpointError as err:
        raise CheckpointError(f"argument --denoiser-flags: {err}") from None
    return denoiser.to(device).eval().requires_grad_(False)


def check_denoiser_serves(denoiser: Denoiser, image_shape, timesteps, *, option: str, name,
                          data: str = "the data") -> None:
    """``denoiser`` (named by ``option name`` in messages) fits images of ``image_shape`` (those ``data`` gives, e.g.
    "--data cifar10:DIR") and holds the DiffAug-Ensemble ``timesteps`` (--de-timesteps); each problem is a one-line
    error naming the option, both shapes and the data."""
    problem = denoiser.shape_problem(image_shape)
    if problem is not None:
        works_on = "x".join(map(str, denoiser.image_shape))  # a problem means the network records its shape
        raise DiffAugError(f"argument {option}: {str(name)!r} works on {works_on} images but {data} gives "
                           f"{'x'.join(map(str, image_shape))} ({problem}); set --image-size / --channels or pass a "
                           "denoiser trained on these images")
    last = len(denoiser.schedule) - 1
    bad = [t for t in timesteps if not 0 <= t <= last]
    if bad:
        raise ValueError(f"argument --de-timesteps: {bad} outside the denoiser's timesteps 0..{last}")
