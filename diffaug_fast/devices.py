"""Where a command runs: the ``--device`` option of every command that runs a network."""
from __future__ import annotations

import os

import torch

from diffaug_fast.errors import DiffAugError


def run_device(name: str) -> torch.device:
    """``--device``: auto (this process's GPU, else the CPU) or a torch device name that exists here. Under
    torchrun or ``--nproc`` each process's GPU is its LOCAL_RANK."""
    if name == "auto":
        if torch.cuda.is_available():
            rank = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
            return torch.device("cuda", rank % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"argument --device is {name!r}; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise DiffAugError(f"argument --device is {name!r} but this machine has "
                           f"{torch.cuda.device_count()} CUDA GPUs; use --device cpu or auto")
    return device


class OnDevice:
    """A network, or anything with tensor -> tensor methods, run on ``device`` for inputs held elsewhere: each call
    moves its tensors there and brings the output back to the first input's device. The data is made where it is
    tested (the CPU), the networks, where nearly all time goes, run on the GPU. Methods move their tensors too;
    other attributes, submodules included, pass through."""

    def __init__(self, target, device: torch.device):
        self.target, self.device = target, torch.device(device)

    def _run(self, fn, x: torch.Tensor, *args, **kwargs):
        def there(a):
            return a.to(self.device) if isinstance(a, torch.Tensor) else a

        return fn(there(x), *map(there, args), **{k: there(v) for k, v in kwargs.items()}).to(x.device)

    def __call__(self, x: torch.Tensor, *args, **kwargs):
        return self._run(self.target, x, *args, **kwargs)

    def __getattr__(self, name):
        value = getattr(self.target, name)
        if not callable(value) or isinstance(value, torch.nn.Module):  # data and submodules pass as they are
            return value
        return lambda x, *args, **kwargs: self._run(value, x, *args, **kwargs)
