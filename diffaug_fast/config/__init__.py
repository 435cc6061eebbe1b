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

    A config written before ``--denoiser-precision`` existed ran its denoiser at the precision ``--amp`` gave: it
    loads as ``denoiser_precision='amp'``, so the run resumes and re-evaluates exactly as it trained."""
    nested = values.get("diffaug") if isinstance(values.get("diffaug"), dict) else {}
    older = "denoiser_precision" not in values and "denoiser_precision" not in nested
    return build(TrainConfig, *([(f"{source} (before --denoiser-precision)", {"denoiser_precision": "amp"})]
                                if older else []), (source, values))


def flat_options(values: dict) -> dict:
    """A saved training config (nested or flat) as one flat dict by flag name: ``{"mode": ..., "diffaug": ...}``."""
    from diffaug_fast.config.options import get, leaves

    config = train_config_from_dict(values)
    return {leaf.key: get(config, leaf.path) for leaf in leaves(TrainConfig)}


__all__ = ["DenoiserCommand", "DenoiserConfig", "DiffuseOptions", "EvalCommand", "FidelityOptions",
           "GradientsOptions", "NOT_IDENTITY", "PRESETS", "ReportOptions", "RobustnessConfig", "SampleOptions",
           "TrainCommand", "TrainConfig", "build", "flat_options", "read_config_file", "to_dict", "train_config",
           "train_config_from_dict"]
