"""Optimizer, learning-rate schedule and the one EMA of model weights that every trainer uses."""
from __future__ import annotations

import math

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def make_optimizer(params, name: str, lr: float, weight_decay: float, *, nesterov: bool = True
                   ) -> torch.optim.Optimizer:
    """SGD with momentum 0.9 (Nesterov unless ``nesterov=False``, torchvision's ImageNet recipe) or AdamW."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=nesterov, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"argument --optimizer is {name!r}; expected sgd or adamw")


def lr_factor(schedule: str, warmup_steps: int, total: int, *, step_every: int | None = None):
    """The LR multiplier per step: linear warm-up, then cosine to 0, x0.1 at 50% and 75% (step), or constant.
    ``step_every`` (steps; the trainer passes --lr-step-epochs x steps per epoch): 'step' multiplies by 0.1
    every that many steps instead (ImageNet: every 30 epochs)."""
    if step_every is not None and step_every < 1:
        raise ValueError(f"argument 'step_every' must be a positive number of steps, got {step_every}")

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / max(warmup_steps, 1))
        if schedule == "cosine":
            return warm * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        if schedule == "step" and step_every is not None:
            return warm * 0.1 ** (step // step_every)
        if schedule == "step":
            return warm * 0.1 ** (int(step >= total // 2) + int(step >= 3 * total // 4))
        return warm
    return factor


def ema_start_warning(decay: float, steps: int) -> str | None:
    """A warning when an EMA of ``decay`` over ``steps`` updates keeps more than 1 % of the initial (random)
    weights, decay^steps: --ema 0.999 over the default job's 1 872 steps keeps 15 % and tested at 71 % instead of
    90 % (docs/results/main_job). None when the run is long enough."""
    share = decay ** steps if decay else 0.0
    if share <= 0.01:
        return None
    return (f"warning: --ema {decay:g} over {steps} steps keeps {share:.0%} of the initial random weights in the "
            f"average it evaluates; use --ema {1 - 5 / steps:.4f} or less (1 - 5/steps), or more steps")


class EMA:
    """Exponential moving average of a model's weights and buffers (torch's ``AveragedModel``).

    Primed with the initial weights, so after k updates it equals decay^k·W_0 + Σ (1-decay)·decay^(k-i)·W_i:
    the average starts from the initial model, not from the first updated one."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self.averaged.requires_grad_(False)
        self.averaged.update_parameters(model)  # n_averaged 0 -> a copy of the initial weights

    @property
    def module(self) -> torch.nn.Module:
        return self.averaged.module

    def update(self, model: torch.nn.Module) -> None:
        self.averaged.update_parameters(model)

    def state_dict(self) -> dict:  # the plain model's keys: loaders need not know about the wrapper
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
