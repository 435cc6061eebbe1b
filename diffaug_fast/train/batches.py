"""What a classifier sees at each step, from keyed random streams only (streams.py): the same step gives the
same images, crops, timesteps and noise whether the run is fresh, resumed, or split over processes (each
rank takes a contiguous shard of the global batch and its Philox offsets)."""
from __future__ import annotations

import torch

from diffaug_fast import streams
from diffaug_fast.augment import diffuse_and_denoise
from diffaug_fast.data.views import to_unit_range
from diffaug_fast.ops import diffuse
from diffaug_fast.train.step_data import StepImages, StepSpec, check_item, step_items, step_numbers


def diffaug_count(batch: int, fraction: float) -> int:
    """Images of a global batch of ``batch`` that get a DiffAug copy: the first round(fraction x batch), >= 1."""
    return max(1, min(batch, round(fraction * batch)))


def adds_copies(config) -> bool:
    """A clean classifier with --diffaug on: its batches are clean images plus DiffAug copies of some of them, the
    only case --diffaug-fraction, --diffaug-until and --diffaug-weight apply to."""
    return config.diffaug.mode == "on" and config.model.mode == "clean"


def diffaug_steps(config, total_steps: int) -> int:
    """Steps (from the first) whose batches get DiffAug copies: round(--diffaug-until x total_steps) when the run
    adds copies, every step otherwise (``supervised`` decides off / only / noisy by its mode)."""
    return round(config.diffaug.until * total_steps) if adds_copies(config) else total_steps


def denoised_per_batch(config) -> int:
    """Images of each global batch the denoiser sees in training: a share with --diffaug on for a clean classifier,
    every image otherwise (--diffaug only, noisy / DA classifiers; none are denoised with --diffaug off, but the
    evaluation then compiles its pieces at the full batch)."""
    if adds_copies(config):
        return diffaug_count(config.optim.batch_size, config.diffaug.fraction)
    return config.optim.batch_size


class Batches:
    """Batches of one run: ``supervised(step)`` (clean / DiffAug / noisy / DA) and ``semi_supervised(step)``.

    Images come from ``StepImages`` (decoded by ``workers`` processes, or in this one with 0), timesteps and
    noise are drawn here; steps must be asked for in order (a jump, as on resume, restarts the loader there)."""

    def __init__(self, config, source, spec: StepSpec, *, denoiser, fast_net, device, total_steps: int,
                 workers: int = 0, labeled: torch.Tensor | None = None):
        self.config, self.source, self.spec = config, source, spec
        self.denoiser, self.fast_net, self.device = denoiser, fast_net, device
        self.labeled, self.total_steps, self.workers = labeled, total_steps, workers
        self.batch = config.optim.batch_size
        self.augmix_views = spec.augmix_views if config.model.mode == "clean" else 0
        self.diffaug_images = denoised_per_batch(config)
        self.diffaug_steps = diffaug_steps(config, total_steps)
        self.per_image = spec.channels * spec.image_size ** 2
        self.dataset = StepImages(source, spec, labeled)
        self._items, self._next = None, None

    def _item(self, step: int) -> dict:
        if self._items is None or self._next != step:
            self._items = step_items(self.dataset, step, self.total_steps, workers=self.workers,
                                     pin_memory=self.device.type == "cuda")
        self._next = step + 1
        return check_item(next(self._items), step)

    def _images(self, x: torch.Tensor) -> torch.Tensor:
        return to_unit_range(x.to(self.device, non_blocking=True))

    def supervised(self, step: int) -> tuple[tuple, torch.Tensor]:
        """This rank's shard of step ``step``: (the classifier's inputs, labels). Inputs: (clean [+ DiffAug]
        images,) in clean mode, (x_t, t) for noisy, (x_t, t, x0_hat) for DA."""
        config, shard = self.config, self.spec.shard
        item, numbers = self._item(step), step_numbers(self.spec, step)
        x, y = self._images(item["x"]), item["y"].to(self.device)
        offset = streams.batch_offset(step, self.batch, shard.start, self.per_image)
        if config.model.mode != "clean":  # a classifier of noisy images: t over the whole chain
            return self.noisy_inputs(x, numbers["t_all"].to(self.device), offset), y
        views, y_views = [], []
        if "augmix_views" in item:  # the JSD recipe: clean images, then the AugMix views, then the DiffAug copies
            views, y_views = [self._images(item["augmix_views"])], [y] * self.augmix_views
        if config.diffaug.mode == "off" or step >= self.diffaug_steps:  # --diffaug-until: the clean last steps
            return (torch.cat([x, *views]),), torch.cat([y, *y_views])
        branch = self._images(item["x_view"]) if "x_view" in item else x  # the official recipe's own DiffAug view
        # this shard's part of the global batch's first `diffaug_images` images; noise keyed by global index
        n = max(0, min(self.diffaug_images, shard.stop) - shard.start)
        if n == 0:
            return (torch.cat([x, *views]),), torch.cat([y, *y_views])
        x_hat = diffuse_and_denoise(self.denoiser, branch[:n], numbers["ts"][:n], seed=config.run.seed,
                                    offset=offset, net=self.fast_net)
        if config.diffaug.mode == "only":
            return (x_hat,), y
        return (torch.cat([x, *views, x_hat]),), torch.cat([y, *y_views, y[:n]])

    def noisy_inputs(self, x: torch.Tensor, t: torch.Tensor, offset: int) -> tuple:
        """(x_t, t) for a noisy classifier, (x_t, t, x̂0) for a DA classifier; noise at ``offset``. The noisy
        mode sees the same x_t as the DA mode would, without running the denoiser."""
        seed = self.config.run.seed
        if self.config.model.mode == "noisy":
            a, s = self.denoiser.schedule.coefficients(t, device=self.device)
            return diffuse(x, a, s, seed=seed, offset=offset), t
        x_t, x_hat = diffuse_and_denoise(self.denoiser, x, t, seed=seed, net=self.fast_net, offset=offset,
                                         return_noisy=True)
        return x_t, t, x_hat

    def semi_supervised(self, step: int) -> dict:
        """This rank's shard of step ``step``: labeled inputs + labels, and (with the consistency term or PU)
        the unlabeled images at t and at t'. Three Philox lanes: labeled, unlabeled, fresh-ε partners."""
        semi, b, shard = self.config.semi, self.batch, self.spec.shard
        item, numbers = self._item(step), step_numbers(self.spec, step, self.labeled)
        x = self._images(item["labeled"])
        y = torch.ones(len(x), dtype=torch.long) if semi.pu else item["y"]
        lane = lambda i: streams.batch_offset(step, b, shard.start, self.per_image, lane=i, lanes=3)  # noqa: E731
        out = {"labeled": self.noisy_inputs(x, numbers["t_lab"].to(self.device), lane(0)), "y": y.to(self.device)}
        if "unlabeled" not in item:
            return out
        u = self._images(item["unlabeled"])
        out["unlabeled"] = self.noisy_inputs(u, numbers["t_u"].to(self.device), lane(1))
        if semi.consistency:
            pair_offset = lane(1) if semi.tc_noise == "same" else lane(2)
            out["pair"] = self.noisy_inputs(u, numbers["t_pair"].to(self.device), pair_offset)
        return out
