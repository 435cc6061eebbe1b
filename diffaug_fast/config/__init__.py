"""Typed configs: the one source of every option (defaults, types, help, checks); the CLI is generated from
them (config/options.py says how)."""
from __future__ import annotations

from diffaug_fast.config.commands import (DenoiserCommand, DenoiserConfig, DiffuseOptions, EvalCommand,
                                          FidelityOptions, GradientsOptions, ReportOptions, RobustnessConfig,
                                          SampleOptions, TrainCommand)
from diffaug_fast.config.options import build, read_config_file, to_dict
from diffaug_fast.config.train import NOT_IDENTITY, PRESETS, TrainConfig


def train_config(preset: str = "default", **overrides) -> TrainConfig:
    """A validated ``TrainConfig``: ``preset`` (see ``PRESETS``), then options by their flag names
    (``lr=0.1``, ``ema=0.999``, ``de_timesteps=[0, 100]``) or as nested sections (``optim={"lr": 0.1}``)."""
    if preset not in PRESETS:
        raise ValueError(f"argument --preset is {preset!r}; expected one of {', '.join(PRESETS)}")
    return build(TrainConfig, (f"preset {preset!r}", PRESETS[preset]), ("options", overrides))


def train_config_from_dict(values: dict, *, source: str = "config") -> TrainConfig:
    """A ``TrainConfig`` from a saved config.json: nested sections, or the flat layout of earlier versions.

    A config written before an option existed loads with the value that reproduces it (``LEGACY``): before
    ``--denoiser-precision`` the denoiser ran at the precision ``--amp`` gave ("amp"); before ``--val-size`` every
    training image trained (0). So such a run resumes and re-evaluates exactly as it trained."""
    def before(option: str, section: str) -> bool:
        nested = values.get(section) if isinstance(values.get(section), dict) else {}
        return option not in values and option not in nested

    earlier = [(f"{source} (before --{flag.replace('_', '-')})", {flag: then}) for flag, section, then in LEGACY
               if before(flag, section)]
    return build(TrainConfig, *earlier, (source, values))


# Options added after runs were written, and the value that reproduces such a run: (flag name, section, value).
LEGACY = (("denoiser_precision", "diffaug", "amp"),  # the denoiser ran at the precision --amp gave
          ("val_size", "data", 0))  # every training image trained


def flat_options(values: dict) -> dict:
    """A saved training config (nested or flat) as one flat dict by flag name: ``{"mode": ..., "diffaug": ...}``."""
    from diffaug_fast.config.options import get, leaves

    config = train_config_from_dict(values)
    return {leaf.key: get(config, leaf.path) for leaf in leaves(TrainConfig)}


__all__ = ["DenoiserCommand", "DenoiserConfig", "DiffuseOptions", "EvalCommand", "FidelityOptions",
           "GradientsOptions", "NOT_IDENTITY", "PRESETS", "ReportOptions", "RobustnessConfig", "SampleOptions",
           "TrainCommand", "TrainConfig", "build", "flat_options", "read_config_file", "to_dict", "train_config",
           "train_config_from_dict"]
