"""The images of each training step, decoded and augmented in DataLoader worker processes.

Everything random about a step comes from keyed streams (streams.py), so a step's images do not depend on
which process loads them, how many workers there are, or whether the run was resumed: item ``step`` of
``StepImages`` is this rank's shard of that step's global batch. The loader walks the steps from the one the
run is at, so a run resumed mid-epoch continues with the same images and augmentations as a straight run;
memory holds a few prefetched steps, never the data set.

The draws of a step (``step_numbers``) are replayed by the worker (crops, AugMix seeds, which images) and by
the training process (timesteps): the same generator, the same order, so both see the same numbers.
"""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from functools import lru_cache

import torch

from diffaug_fast import streams
from diffaug_fast.augment import partner_timesteps, sample_timesteps
from diffaug_fast.data import ArraySource, ImageReadError, eval_images, open_source, source_images
from diffaug_fast.data.views import center, fit, resized_crop
from diffaug_fast.train.distributed import world
from diffaug_fast.train.augmix import augmix
from diffaug_fast.train.transforms import crop_flip, crop_flip_params

CROPS = ("pad", "resized")
DIFFAUG_VIEWS = ("same", "center")


@dataclass(frozen=True)
class StepSpec:
    """What decides a step's images (picklable: each worker gets a copy)."""

    seed: int
    batch: int           # the global batch
    rank: int
    world: int
    images: int          # size of the training set
    image_size: int
    channels: int
    crop: str = "pad"            # pad: pad-2 random crop + flip; resized: RandomResizedCrop + flip
    diffaug_view: str = "same"   # center: the DiffAug branch gets Resize(S·256/224) + CenterCrop(S)
    augmix: bool = False
    augmix_views: int = 0        # > 0: the clean image stays, with this many AugMix views beside it (JSD recipe)
    t_min: int = 0
    t_max: int = 0
    last: int = 0                # the denoiser's last timestep (noisy / DA / semi-supervised draws)
    noisy: bool = False          # a classifier of x_t: t over the whole chain
    semi: bool = False
    unlabeled: bool = False      # semi-supervised with unlabeled images (consistency or PU)
    radius: int = 0

    @property
    def steps_per_epoch(self) -> int:
        return self.images // self.batch

    @property
    def shard(self) -> slice:
        b = self.batch
        return slice(self.rank * b // self.world, (self.rank + 1) * b // self.world)


def step_numbers(spec: StepSpec, step: int, labeled: torch.Tensor | None = None) -> dict:
    """Every generator draw of step ``step``, in the order the project has always drawn them, cut to the shard."""
    b, sh = spec.batch, spec.shard
    gen = streams.generator(spec.seed, "train_step", step)
    if not spec.semi:
        out = {"crops": crop_flip_params(b, gen)[sh], "ts": sample_timesteps(b, spec.t_min, spec.t_max, gen)[sh],
               "augmix_seeds": torch.randint(0, 2**62, (b,), generator=gen)[sh]}
        if spec.noisy:
            out["t_all"] = sample_timesteps(b, 0, spec.last, gen)[sh]
        if spec.augmix_views > 1:  # drawn last: runs without the views keep every earlier draw
            out["augmix_seeds_more"] = torch.randint(0, 2**62, (spec.augmix_views - 1, b), generator=gen)[:, sh]
        return out
    out = {"labeled": labeled[torch.randint(len(labeled), (b,), generator=gen)][sh],
           "crops": crop_flip_params(b, gen)[sh], "t_lab": sample_timesteps(b, 0, spec.last, gen)[sh]}
    if spec.unlabeled:
        out["crops_u"] = crop_flip_params(b, gen)[sh]
        t_u = sample_timesteps(b, 0, spec.last, gen)
        out["t_pair"] = partner_timesteps(t_u, spec.radius, spec.last, gen)[sh]
        out["t_u"] = t_u[sh]
    return out


@lru_cache(maxsize=2)
def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=streams.generator(seed, "epoch_order", epoch))


class StepImages(torch.utils.data.Dataset):
    """Item ``step``: {"step", "x", "y"} (+ "x_view": the DiffAug branch's images, + "augmix_views": the AugMix
    views of the JSD recipe, view after view) for supervised runs,
    {"step", "labeled", "y", "unlabeled"} for semi-supervised ones; images uint8 [b, C, S, S] (or float in
    [-1, 1] when the caller's in-memory images are float). A file that cannot be decoded gives {"error": ...}:
    the training process raises it as one line (an exception inside a worker would arrive as a traceback)."""

    def __init__(self, source, spec: StepSpec, labeled: torch.Tensor | None = None):
        self.source, self.spec, self.labeled = source, spec, labeled

    def __len__(self) -> int:
        return 2**62  # indexed by step; the sampler decides which steps

    def __getitem__(self, step: int) -> dict:
        spec = self.spec
        numbers = step_numbers(spec, step, self.labeled)
        epoch, k = divmod(step, spec.steps_per_epoch)
        order = lambda: epoch_order(spec.images, spec.seed, epoch)[k * spec.batch:(k + 1) * spec.batch][spec.shard]  # noqa: E731
        try:
            if not spec.semi:
                idx = order()
                out = {"step": step, "y": self.source.labels[idx]}
                out["x"], view = self._load(idx, numbers["crops"], step, lane=0, with_view=spec.diffaug_view == "center")
                if view is not None:
                    out["x_view"] = view
                if spec.augmix and spec.augmix_views:  # views beside the clean image, each with its own seeds
                    seeds = [numbers["augmix_seeds"], *numbers.get("augmix_seeds_more", [])]
                    out["augmix_views"] = torch.cat([augmix(out["x"], s) for s in seeds])
                elif spec.augmix:
                    out["x"] = augmix(out["x"], numbers["augmix_seeds"])
                return out
            lab = numbers["labeled"]
            out = {"step": step, "y": self.source.labels[lab], "labeled": self._load(lab, numbers["crops"], step, 0)[0]}
            if spec.unlabeled:
                out["unlabeled"] = self._load(order(), numbers["crops_u"], step, 1)[0]
            return out
        except ImageReadError as err:
            return {"step": step, "error": str(err)}

    def _load(self, idx: torch.Tensor, crops: torch.Tensor, step: int, lane: int, with_view: bool = False):
        spec, source = self.spec, self.source
        size, channels = spec.image_size, spec.channels
        if spec.crop == "pad" and isinstance(source, ArraySource) and \
                tuple(source.images.shape[1:]) == (channels, size, size):
            return crop_flip(source.batch(idx), crops), None  # in memory, already the right size
        images = [source.image(int(i)) for i in idx]
        view = torch.stack([center(im, size, channels) for im in images]) if with_view else None
        if spec.crop == "pad":
            return crop_flip(torch.stack([fit(im, size, channels) for im in images]), crops), view
        first = (2 * step + lane) * spec.batch + spec.shard.start  # one keyed generator per image slot
        return torch.stack([resized_crop(im, size, channels, streams.generator(spec.seed, "train_view", first + j))
                            for j, im in enumerate(images)]), view


def ignore_interrupts(_worker_id: int) -> None:
    """Ctrl-C reaches every process of the terminal's group, a scheduler's SIGTERM every process of the job: the
    workers leave both to the training process, which finishes its step, saves and stops (a worker dying of one
    would crash the step instead). A worker still exits with its parent (DataLoader's watchdog)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def step_items(dataset: StepImages, start: int, end: int, *, workers: int, pin_memory: bool = False):
    """Items ``start .. end - 1`` in order: in this process (``workers`` 0) or from ``workers`` processes that
    decode ahead (two steps each)."""
    if workers == 0:
        for step in range(start, end):
            yield dataset[step]
        return
    yield from torch.utils.data.DataLoader(dataset, batch_size=None, sampler=range(start, end), num_workers=workers,
                                           pin_memory=pin_memory, prefetch_factor=2,
                                           worker_init_fn=ignore_interrupts)


def check_item(item: dict, step: int) -> dict:
    if "error" in item:
        raise ImageReadError(item["error"])
    if item["step"] != step:  # a loader that skipped or reordered steps would silently change the run
        raise RuntimeError(f"data loader returned step {item['step']} for step {step}")
    return item


def loader_workers(config, source) -> int:
    """--workers, or auto: none for in-memory sets (nothing to decode), else up to 8 per training process."""
    if config.data.workers is not None:
        return config.data.workers
    if isinstance(source, ArraySource):
        return 0
    return min(8, max(1, (os.cpu_count() or 1) // world()[1]))


def evaluation_images(config):
    """The test images of a run's data, as evaluation reads them (folders decoded a slice at a time)."""
    return eval_images(config.data.source, "test", image_size=config.data.image_size, channels=config.data.channels,
                       view_name=_eval_view(config))


def _eval_view(config) -> str:
    return "center" if config.data.crop == "resized" else "fit"


def training_source(config):
    """The images a run trains on: its data's training images less the validation split, then --train-limit."""
    d = config.data
    return open_source(d.source, "train", limit=d.train_limit, val_size=d.val_size, split_seed=d.split_seed)


def validation_images(config):
    """(images, labels) of the run's validation split as evaluation reads them; None when it holds none."""
    d = config.data
    source = open_source(d.source, "val", val_size=d.val_size, split_seed=d.split_seed)
    if not len(source):
        return None
    return source_images(source, image_size=d.image_size, channels=d.channels, view_name=_eval_view(config))
