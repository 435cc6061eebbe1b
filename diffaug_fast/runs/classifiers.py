"""Loading and exporting trained classifiers: a run folder, an exported ``.safetensors`` + ``.json``, or the
name of a classifier shipped with the package."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from diffaug_fast.config import TrainConfig, to_dict, train_config_from_dict
from diffaug_fast.errors import DiffAugError
from diffaug_fast.models.build import build_model, num_classes_of
from diffaug_fast.runs import files
from diffaug_fast.runs.checkpoint import checkpoint_exists, load_verified
from diffaug_fast.runs.provenance import data_record, denoiser_record, read_records, resolve_config_values
from diffaug_fast.runs.weights import CLASSIFIERS, WEIGHTS_DIR, load_denoiser


def classifier_path(source: str | Path) -> Path:
    """A shipped classifier's name resolved to its weights file; any other source as a path."""
    name = str(source)
    return WEIGHTS_DIR / f"{CLASSIFIERS[name]}.safetensors" if name in CLASSIFIERS else Path(source)


def run_config(run_dir: str | Path) -> TrainConfig:
    """The training config saved in a run folder, its data and denoiser resolved to where they are now (see
    runs/provenance.py: the run works from any directory)."""
    path = Path(run_dir) / files.CONFIG
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} holds no `diffaug-fast train` run (no {files.CONFIG})")
    values = resolve_config_values(files.read_json(path), run_dir, read_records(run_dir), str(run_dir))
    return train_config_from_dict(values, source=str(path))


def classifier_weights(source: str | Path) -> tuple[dict, TrainConfig, int]:
    """(state dict, training config, number of classes) of a run folder (EMA weights when it kept them) or an
    export. Runs and exports of earlier versions, which did not record the classes, are read by their output
    layer."""
    source = classifier_path(source)
    if source.suffix == ".safetensors":
        from safetensors.torch import load_file

        meta_path = source.with_suffix(".json")
        if not source.exists() or not meta_path.exists():
            raise FileNotFoundError(f"need both {source} and {meta_path} (written by `diffaug-fast export-classifier`)")
        meta = files.read_json(meta_path)
        try:
            weights = load_file(str(source))
        except Exception as err:  # truncated or foreign file
            raise DiffAugError(f"{source} could not be read as a .safetensors file: {err}") from None
        classes = meta.get("num_classes") or num_classes_of(weights)
        values = resolve_config_values(meta["config"], source.parent, (meta.get("denoiser"), meta.get("data")),
                                       str(source))
        return weights, train_config_from_dict(values, source=str(meta_path)), classes
    ckpt = source / files.CHECKPOINT
    if not source.is_dir() or not checkpoint_exists(ckpt):
        raise FileNotFoundError(f"{source} holds no `diffaug-fast train` run (need {files.CONFIG} and "
                                f"{files.CHECKPOINT}), nor is it an exported .safetensors classifier")
    config = run_config(source)
    state = load_verified(ckpt)
    weights = state["ema"] if state.get("ema") else state["model"]
    return weights, config, state.get("num_classes") or num_classes_of(weights)


def load_classifier(source: str | Path, device="cpu", *, denoiser=None) -> tuple[torch.nn.Module, TrainConfig]:
    """A trained classifier in eval mode, with its training config. ``source``: a ``diffaug-fast train`` run
    folder, an ``export-classifier`` ``.safetensors`` file, or a shipped classifier's name
    (``fmnist-classifier``). Noisy / DA classifiers get their run's denoiser unless ``denoiser`` is given."""
    weights, config, num_classes = classifier_weights(source)
    if config.model.mode != "clean" and denoiser is None:
        denoiser = load_denoiser(config.diffaug.denoiser, device, config.diffaug.denoiser_flags)
    model = build_model(config.model.mode, config.model.arch, denoiser=denoiser, num_classes=num_classes,
                        in_channels=config.data.channels, image_size=config.data.image_size,
                        norm=config.model.norm, fusion=config.model.fusion)
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise DiffAugError(f"{source}: the weights do not fit a {config.model.arch} classifier "
                           f"({str(err).splitlines()[0]})") from None
    return model.to(device).eval(), config


def classifier_classes(source: str | Path, num_classes: int) -> list[str]:
    """Class names saved with a run folder or export; else ``0 … n-1``."""
    source = classifier_path(source)
    if source.suffix == ".safetensors":
        names = files.read_json(source.with_suffix(".json"), {}).get("classes")
    else:
        names = files.read_json(source / files.CLASSES)
    return list(names) if names and len(names) == num_classes else [str(i) for i in range(num_classes)]


def export_classifier(run_dir: str | Path, weights: str | Path) -> Path:
    """Write a run's classifier (EMA weights when kept) as ``weights`` (.safetensors) + a ``.json`` config."""
    from safetensors.torch import save_file

    weights = Path(weights)
    if weights.suffix != ".safetensors":
        raise ValueError(f"argument --out must end in .safetensors, got {weights}")
    state, config, num_classes = classifier_weights(run_dir)
    state = {k: v.contiguous() for k, v in state.items()}
    meta = {"config": to_dict(config), "num_classes": num_classes, "classes": classifier_classes(run_dir, num_classes),
            "source": str(run_dir)}
    denoiser, data = read_records(run_dir) if Path(run_dir).is_dir() else (None, None)
    if denoiser is not None:  # re-based on the export's folder; config (resolved by run_config) holds where it is
        meta["denoiser"] = denoiser_record(config.diffaug.denoiser, weights.parent, denoiser.get("flags"))
    if data is not None:
        meta["data"] = data_record(config.data.source, weights.parent)
    metrics = files.read_json(Path(run_dir) / files.METRICS)
    if metrics is not None:
        meta["metrics"] = metrics
    weights.parent.mkdir(parents=True, exist_ok=True)
    tmp = weights.with_name(weights.name + ".tmp")
    save_file(state, str(tmp))
    tmp.replace(weights)
    files.write_text_atomic(weights.with_suffix(".json"), json.dumps(meta, indent=2))
    return weights
