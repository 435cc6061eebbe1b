"""Checks a training run makes before any work (its device: ``diffaug_fast.devices``): the denoiser fits the data
and the timesteps asked of it, and a resumed or re-evaluated run has the settings it was trained with."""
from __future__ import annotations

from pathlib import Path

from diffaug_fast.augment import denoiser_dtype
from diffaug_fast.config import NOT_IDENTITY, TrainConfig, to_dict, train_config_from_dict
from diffaug_fast.devices import run_device
from diffaug_fast.errors import DiffAugError
from diffaug_fast.runs import files
from diffaug_fast.runs.checkpoint import checkpoint_exists
from diffaug_fast.runs.provenance import denoiser_key, read_records, resolve_config_values, same_data, same_denoiser
from diffaug_fast.runs.weights import check_denoiser_serves


def check_resume(out: Path, resume: bool, command: str = "train") -> None:
    """``--resume`` exactly when ``--out`` holds a checkpoint of a ``command`` run ("train" / "train-denoiser"):
    never start over a run or over the other command's, never resume nothing, and a run that stopped before its
    first checkpoint is started again by the same command without --resume."""
    kind = files.run_kind(out)
    if kind not in (None, command):
        raise DiffAugError(f"argument --out: {out} is a {files.RUN_KINDS[kind]} folder, not a "
                           f"{files.RUN_KINDS[command]}; choose another --out")
    exists = checkpoint_exists(out / files.CHECKPOINT)
    if exists and not resume:
        raise DiffAugError(f"argument --out: {out} already holds a run; pass --resume to continue it or choose "
                           "another --out")
    if resume and not exists and kind is not None:
        raise DiffAugError(f"argument --resume: {out} holds no checkpoint (the run stopped before its first one); run "
                           "the same command without --resume to start it again")
    if resume and not exists:
        raise DiffAugError(f"argument --resume: {out} holds no checkpoint to resume")


def needs_denoiser(config: TrainConfig, *, training: bool = True) -> bool:
    """The run needs its --denoiser: noisy / DA inputs, an ensemble that no --de-denoiser replaces, or (training
    only; an evaluation of a finished run does not) DiffAug."""
    return config.model.mode != "clean" or (training and config.diffaug.mode != "off") or \
        (bool(config.eval.de_timesteps) and config.eval.de_denoiser is None)


def check_denoiser(config: TrainConfig, denoiser, image_shape) -> int:
    """The denoiser fits the data and the timesteps asked of it; returns the DiffAug t_max."""
    ensemble = config.eval.de_timesteps if config.eval.de_denoiser is None else []  # else checked with its own
    check_denoiser_serves(denoiser, image_shape, ensemble, option="--denoiser", name=config.diffaug.denoiser,
                          data=f"--data {config.data.source}")
    last = len(denoiser.schedule) - 1
    t_max = last if config.diffaug.t_max is None else config.diffaug.t_max
    if not 0 <= config.diffaug.t_min <= t_max <= last:
        raise ValueError(f"need 0 <= --t-min <= --t-max <= {last} (the denoiser's last timestep), got "
                         f"t_min={config.diffaug.t_min}, t_max={t_max}")
    return t_max


def check_ensemble_denoiser(config: TrainConfig, denoiser, image_shape) -> None:
    """A --de-denoiser fits the test images and holds the --de-timesteps."""
    check_denoiser_serves(denoiser, image_shape, config.eval.de_timesteps, option="--de-denoiser",
                          name=config.eval.de_denoiser, data=f"--data {config.data.source}")


def identity(values: dict) -> dict:
    """The options that define what a run trains (everything but evaluation and execution settings)."""
    flat = {f"{sec}.{name}": v for sec, opts in values.items() for name, v in opts.items()}
    return {k: v for k, v in flat.items() if not any(k == n or k.startswith(n + ".") for n in NOT_IDENTITY)}


def check_same_run(saved: dict, config: TrainConfig, what: str, run_dir: Path | None = None) -> None:
    """Refuse to continue a run with settings that change what it trains, naming the options. The data and the
    denoiser are compared by what they are (resolved path; content hash, recorded in ``run_dir``), not by the
    string typed: an absolute and a relative spelling of the same file are the same run."""
    denoiser, data = read_records(run_dir) if run_dir is not None else (None, None)
    if run_dir is not None:  # the saved data path as typed then, resolved from the run folder
        saved = resolve_config_values(saved, run_dir, (None, data), what)
    before = identity(to_dict(train_config_from_dict(saved, source=what)))
    now = identity(to_dict(config))
    recorded = denoiser.get("sha256") if denoiser else None
    device = run_device(config.run.device)
    same = {"data.source": same_data,  # the denoiser's precision by the dtype it gives here ('amp' = 'auto' on CPUs
            # without native bf16): runs written before --denoiser-precision resume without the flag
            "diffaug.denoiser_precision": lambda a, b: denoiser_dtype(a, config.run.amp, device) ==
            denoiser_dtype(b, config.run.amp, device),
            "diffaug.denoiser": lambda a, b: denoiser_key(b) == f"sha256:{recorded}" if recorded else same_denoiser(a, b)}
    changed = sorted(k for k in before if before[k] != now.get(k) and not (k in same and same[k](before[k], now[k])))
    if changed:
        detail = ", ".join(f"{k.split('.')[-1]}: {before[k]!r} -> {now.get(k)!r}" for k in changed)
        fixed = [f for f in ("epochs", "max_steps") if f"optim.{f}" in changed]
        hint = (f" (a run's --{fixed[0].replace('_', '-')} is fixed: its learning-rate schedule spans them)"
                if fixed else "")
        raise DiffAugError(f"{what} was written with different settings ({detail}){hint}; use the same settings to "
                           "resume (`--resume` without --preset or --config takes the run's own), or another --out "
                           "folder")
