"""``--init``: offline pretrained weights loaded into a freshly built classifier before training.

The file is a state dict the user holds: a ``.pth`` / ``.pt`` file read with ``torch.load(weights_only=True)``
(no pickled code runs; e.g. torchvision's released resnet50 weights saved to disk), or a ``.safetensors`` file
(e.g. ``diffaug-fast export-classifier``). The classification head (the model's last ``Linear`` / ``Conv2d``)
keeps its fresh initialisation when its shape differs from the file's (1000 ImageNet classes vs the data's);
every other difference is an error naming the tensors.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from diffaug_fast.errors import DiffAugError

INIT_SUFFIXES = (".pth", ".pt", ".safetensors")
AUX_HEADS = ("AuxLogits.", "aux1.", "aux2.")  # inception_v3 / googlenet: auxiliary heads we build without
WRAPPERS = ("module.", "_orig_mod.")  # DistributedDataParallel / torch.compile prefixes


def check_init_path(path: str) -> None:
    """The suffix of an ``--init`` file (its existence is checked when it is read)."""
    if Path(path).suffix not in INIT_SUFFIXES:
        raise ValueError(f"argument --init is {path!r}; expected a state dict file ending in "
                         f"{', '.join(INIT_SUFFIXES)}")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of an ``--init`` file, with DDP / torch.compile prefixes removed."""
    path = Path(path)
    check_init_path(str(path))
    if not path.is_file():
        raise FileNotFoundError(f"argument --init: {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, foreign, or a pickle with more than tensors in it
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DiffAugError(f"argument --init: {path} could not be read as a {path.suffix} state dict "
                           f"({reason})") from None
    if isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        state = next((state[k] for k in ("state_dict", "model") if isinstance(state.get(k), dict)), state)
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DiffAugError(f"argument --init: {path} holds no state dict (a mapping of names to tensors)")
    for prefix in WRAPPERS:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def head_name(model: nn.Module) -> str:
    """The classification head: the name of the model's last ``Linear`` / ``Conv2d`` module."""
    names = [name for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    return names[-1] if names else ""


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(map(str, t.shape)) + "]"


def _some(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")


def load_init(model: nn.Module, path: str | Path, arch: str = "the classifier") -> str:
    """Load ``path`` into ``model`` (a fresh ``arch``); returns the one line to print. A head of another shape
    keeps its fresh initialisation; any other missing, extra or differently shaped tensor is a DiffAugError."""
    state = read_state_dict(path)
    own = model.state_dict()
    head = head_name(model)
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own and not k.startswith(AUX_HEADS)]
    differ = [k for k in own if k in state and state[k].shape != own[k].shape]
    reinit = [k for k in differ if k.rpartition(".")[0] == head]
    other = [k for k in differ if k not in reinit]
    problems = [f"{len(other)} of another shape ("
                + "; ".join(f"{k}: {_shape(state[k])} in the file, {_shape(own[k])} here" for k in other[:2])
                + ")"] if other else []
    problems += [f"{len(missing)} missing ({_some(missing)})"] if missing else []
    problems += [f"{len(extra)} not in the model ({_some(extra)})"] if extra else []
    if problems:
        raise DiffAugError(f"argument --init: {path} does not fit {arch}: tensors {'; '.join(problems)}")
    model.load_state_dict({k: v for k, v in state.items() if k in own and k not in reinit}, strict=False)
    line = f"--init {path}: loaded {len(own) - len(reinit)} of {len(own)} tensors into {arch}"
    if reinit:
        weight = next((k for k in reinit if k.endswith("weight")), reinit[0])
        line += (f"; classification head {head} re-initialised ({_shape(state[weight])} in the file, "
                 f"{_shape(own[weight])} here)")
    return line
