"""Loading released diffusion checkpoints safely into our networks.

Weights are read with safetensors or ``torch.load(weights_only=True)`` only: a pickle that would run
code is refused. guided-diffusion / improved-diffusion checkpoints are described by the flags their
scripts were run with, given as a dict, a JSON file or string, or the command-line string itself
(``"--image_size 64 --num_channels 128 ..."``; the ``classifier_*`` spellings work too).
"""
from __future__ import annotations

import json
import os
import pickle
import shlex
from pathlib import Path

import torch
from torch import nn

from diffaug_fast.diffusion.denoiser import Denoiser
from diffaug_fast.diffusion.schedules import cosine_vp, linear_vp
from diffaug_fast.diffusion.unet import EncoderUNetModel, UNetModel
from diffaug_fast.errors import DiffAugError


class CheckpointError(DiffAugError, ValueError):
    """A checkpoint that cannot be read, is unsafe, or does not fit the network its flags describe."""


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # truncated or not a safetensors file (SafetensorError, OSError, ...)
            raise CheckpointError(f"{path} could not be read as a .safetensors file: {err}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{path} is not a plain tensor checkpoint and was refused: loading it would run "
                              f"code inside the pickle ({str(err).splitlines()[0]})") from None
    except Exception as err:  # truncated or not a torch file at all
        raise CheckpointError(f"{path} could not be read as a checkpoint: {err}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return state


def _coerce(value: str):
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(value.lower(), value)


def parse_flags(flags) -> dict:
    """Flags as a dict from a dict, a JSON file / string, or a ``--name value`` command-line string."""
    if isinstance(flags, dict):
        return dict(flags)
    if isinstance(flags, (str, os.PathLike)) and Path(flags).suffix == ".json" and Path(flags).is_file():
        return json.loads(Path(flags).read_text())
    text = str(flags).strip()
    if text.startswith("{"):
        return json.loads(text)
    tokens, parsed = shlex.split(text), {}
    for i in range(0, len(tokens), 2):
        if not tokens[i].startswith("--") or i + 1 >= len(tokens):
            raise ValueError(f"flags must be '--name value' pairs; cannot read {' '.join(tokens[i:i + 2])!r}")
        parsed[tokens[i][2:]] = _coerce(tokens[i + 1])
    return parsed


_UNET_FLAGS = {"image_size", "num_channels", "num_res_blocks", "attention_resolutions", "dropout", "channel_mult",
               "learn_sigma", "class_cond", "num_heads", "num_head_channels", "num_heads_upsample",
               "use_scale_shift_norm", "resblock_updown", "use_new_attention_order", "use_fp16", "in_channels",
               "num_classes"}
_CLASSIFIER_RENAMES = {"classifier_width": "model_channels", "classifier_depth": "num_res_blocks",
                       "classifier_attention_resolutions": "attention_resolutions",
                       "classifier_use_scale_shift_norm": "use_scale_shift_norm",
                       "classifier_resblock_updown": "resblock_updown", "classifier_pool": "pool",
                       "classifier_use_fp16": "use_fp16"}
_ENCODER_FLAGS = {"image_size", "in_channels", "model_channels", "out_channels", "num_res_blocks",
                  "attention_resolutions", "channel_mult", "num_head_channels", "use_scale_shift_norm",
                  "resblock_updown", "pool", "use_fp16", "use_new_attention_order", "dropout", "num_heads"}


def unet_from_flags(flags) -> UNetModel:
    flags = parse_flags(flags)
    return UNetModel(**{k: v for k, v in flags.items() if k in _UNET_FLAGS})


def classifier_from_flags(flags) -> EncoderUNetModel:
    flags = {_CLASSIFIER_RENAMES.get(k, k): v for k, v in parse_flags(flags).items()}
    return EncoderUNetModel(**{k: v for k, v in flags.items() if k in _ENCODER_FLAGS})


def _likely_flags(missing, unexpected, mismatched) -> list[str]:
    hints = []
    keys = set(missing) | set(unexpected)
    if "label_emb.weight" in keys:
        hints.append("class_cond")
    if any(k.startswith(("out.2.", "out.")) for k, *_ in mismatched):
        hints.append("learn_sigma / out_channels")
    if any(".qkv." in k or "proj_out" in k for k in keys):
        hints.append("attention_resolutions / num_head_channels")
    if any(".op." in k or "h_upd" in k or ".conv." in k for k in keys):
        hints.append("resblock_updown / conv_resample")
    if any("emb_layers.1" in k for k, *_ in mismatched):
        hints.append("use_scale_shift_norm")
    if any(k.startswith(("input_blocks", "output_blocks", "middle_block")) for k in keys) or mismatched:
        hints.append("num_channels / channel_mult / num_res_blocks")
    return hints


def load_into(model: nn.Module, state: dict[str, torch.Tensor], *, source: str = "checkpoint") -> nn.Module:
    """``model.load_state_dict(state, strict=True)`` with an error that says what differs and which flags."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [(k, list(state[k].shape), list(own[k].shape)) for k in sorted(set(own) & set(state))
                  if state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        def show(items):
            return ", ".join(map(str, items[:6])) + (f" … ({len(items)} in all)" if len(items) > 6 else "")

        parts = [f"{source} does not fit the network built from these flags"]
        if missing:
            parts.append(f"missing keys: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {show(unexpected)}")
        if mismatched:
            parts.append("shape mismatches (checkpoint vs network): "
                         + show([f"{k} {a} vs {b}" for k, a, b in mismatched]))
        hints = _likely_flags(missing, unexpected, mismatched)
        if hints:
            parts.append(f"flags that probably differ: {', '.join(dict.fromkeys(hints))}")
        raise CheckpointError("; ".join(parts))
    model.load_state_dict(state, strict=True)
    return model


def load_guided_diffusion_unet(path, flags) -> UNetModel:
    """A guided-diffusion / improved-diffusion UNet checkpoint, with the flags it was trained with."""
    return load_into(unet_from_flags(flags), load_state_dict(path), source=str(path))


def load_guided_diffusion_classifier(path, flags) -> EncoderUNetModel:
    """A guided-diffusion noisy-classifier checkpoint, with its ``classifier_*`` flags."""
    return load_into(classifier_from_flags(flags), load_state_dict(path), source=str(path))


# The diffusion flags of guided-diffusion / improved-diffusion, and flags of their training and sampling scripts
# that do not change the network or its noise schedule (so a whole pasted command line reads).
_DIFFUSION_FLAGS = {"diffusion_steps", "noise_schedule", "predict_xstart", "rescale_timesteps"}
_SCRIPT_FLAGS = {"timestep_respacing", "use_kl", "rescale_learned_sigmas", "sigma_small", "use_checkpoint",
                 "data_dir", "schedule_sampler", "lr", "weight_decay", "lr_anneal_steps", "batch_size", "microbatch",
                 "ema_rate", "log_interval", "save_interval", "resume_checkpoint", "fp16_scale_growth",
                 "num_samples", "use_ddim", "clip_denoised", "model_path", "iterations", "anneal_lr", "noised",
                 "eval_interval", "val_data_dir"}
# Flags only guided-diffusion has: their presence means guided-diffusion's defaults (rescale_timesteps False).
_GUIDED_ONLY = {"num_head_channels", "resblock_updown", "use_fp16", "use_new_attention_order", "channel_mult"}
_BOOL_FLAGS = {"learn_sigma", "class_cond", "use_scale_shift_norm", "resblock_updown", "use_new_attention_order",
               "use_fp16", "predict_xstart", "rescale_timesteps"}


class ReleasedUNet(nn.Module):
    """``net(x, t)`` for a guided-diffusion / improved-diffusion UNet: the timesteps rescaled to 0..1000 when
    the model was trained with ``rescale_timesteps``, and a class-conditional model given labels ``y`` when the
    caller has them, else ``label`` (a class index) for every image, else the average of its class
    embeddings (guided-diffusion's class-conditional models have no unconditional mode)."""

    def __init__(self, net: UNetModel, time_scale: float = 1.0, label: int | None = None):
        super().__init__()
        self.net, self.time_scale, self.label = net, float(time_scale), label

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.time_scale != 1.0:
            t = t.float() * self.time_scale
        classes = self.net.num_classes
        if classes is not None and y is None:
            y = (x.new_full((len(x), classes), 1.0 / classes, dtype=torch.float32) if self.label is None
                 else torch.full((len(x),), self.label, dtype=torch.long, device=x.device))
        return self.net(x, t, y)


def released_denoiser(checkpoint, flags, *, device="cpu", label: int | None = None,
                      source: str | None = None) -> Denoiser:
    """A released guided-diffusion / improved-diffusion checkpoint (a path, or its state dict) as a Denoiser.

    ``flags``: the flag line its scripts ran with (any form :func:`parse_flags` reads), model and diffusion flags
    together: the network from the model flags; the noise schedule from ``--diffusion_steps`` and
    ``--noise_schedule linear|cosine``; eps or (``--predict_xstart True``) x0 prediction; ``--learn_sigma`` (2C
    output channels, the first C the prediction). Timesteps reach the network rescaled to 0..1000 as
    ``--rescale_timesteps`` says; its default is improved-diffusion's (True) unless a guided-diffusion-only flag
    (``--num_head_channels``, ``--resblock_updown``, ``--use_fp16``, ...) is given, then guided-diffusion's (False);
    it matters only when ``--diffusion_steps`` is not 1000. ``--use_fp16 True`` is honoured on CUDA only.
    Unknown flags, unsupported schedules and a checkpoint that does not fit the flags raise CheckpointError.
    """
    source = source or str(checkpoint)
    try:
        flags = parse_flags(flags)
    except (ValueError, OSError) as err:  # json.JSONDecodeError is a ValueError
        raise CheckpointError(f"cannot read the flags: {err}") from None
    unknown = sorted(k for k in flags if k not in _UNET_FLAGS | _DIFFUSION_FLAGS | _SCRIPT_FLAGS
                     and not k.startswith("classifier_"))
    if unknown:
        raise CheckpointError(f"unknown flag{'s' * (len(unknown) > 1)} {', '.join('--' + k for k in unknown)}; "
                              "expected guided-diffusion / improved-diffusion model and diffusion flags such as "
                              "--image_size, --num_channels, --diffusion_steps, --noise_schedule")
    wrong = [k for k in _BOOL_FLAGS if k in flags and not isinstance(flags[k], bool)]
    if wrong:
        raise CheckpointError(f"--{wrong[0]} is {flags[wrong[0]]!r}; expected True or False")
    steps, kind = flags.get("diffusion_steps", 1000), flags.get("noise_schedule", "linear")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise CheckpointError(f"--diffusion_steps is {steps!r}; expected a positive integer")
    if kind not in ("linear", "cosine"):
        raise CheckpointError(f"--noise_schedule {kind} is not supported; expected linear or cosine (the schedules "
                              "of guided-diffusion and improved-diffusion)")
    schedule = linear_vp(steps) if kind == "linear" else cosine_vp(steps)
    rescale = flags.get("rescale_timesteps", not (_GUIDED_ONLY & set(flags)))
    model_flags = {k: v for k, v in flags.items() if k in _UNET_FLAGS}
    model_flags.setdefault("image_size", 64)  # the scripts' default
    model_flags["use_fp16"] = bool(model_flags.get("use_fp16")) and torch.device(device).type == "cuda"
    if isinstance(model_flags.get("channel_mult"), (int, float)):  # "--channel_mult 1" read as a number
        model_flags["channel_mult"] = str(model_flags["channel_mult"])
    try:
        net = UNetModel(**model_flags)
    except (TypeError, ValueError, ZeroDivisionError) as err:
        raise CheckpointError(f"the flags do not describe a UNet: {err}") from None
    state = load_state_dict(checkpoint) if not isinstance(checkpoint, dict) else checkpoint
    load_into(net, state, source=source)
    wrapped = ReleasedUNet(net, 1000.0 / steps if rescale else 1.0, label)
    return Denoiser(wrapped, schedule, parametrization="x0" if flags.get("predict_xstart") else "eps",
                    learn_sigma=bool(flags.get("learn_sigma")), clip=True)
