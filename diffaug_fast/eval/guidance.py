"""Samples from a denoiser, optionally guided by a trained noisy / DA classifier (``diffaug-fast sample``): the
run folders are resolved to models here, the sampler itself lives in diffusion/sampling.py."""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from diffaug_fast.augment import PrecisionNet
from diffaug_fast.data.views import to_uint8
from diffaug_fast.devices import run_device
from diffaug_fast.errors import DiffAugError
from diffaug_fast.ops.backends import resolve_precision, warn_if_emulated
from diffaug_fast.ops.compiling import repair_inductor_cache
from diffaug_fast.runs import files
from diffaug_fast.runs.classifiers import classifier_classes, load_classifier
from diffaug_fast.runs.provenance import denoiser_data, same_denoiser
from diffaug_fast.runs.weights import load_denoiser


def class_labels(spec: str, names: list[str], num: int) -> torch.Tensor:
    """``--class``: an index, a class name, or ``all`` (the classes in turn, equally often)."""
    if spec == "all":
        return torch.arange(num) % len(names)
    if spec in names:
        return torch.full((num,), names.index(spec), dtype=torch.long)
    try:
        k = int(spec)
    except ValueError:
        k = -1
    if not 0 <= k < len(names):
        raise DiffAugError(f"argument --class {spec!r}: expected 'all', an index 0..{len(names) - 1} or a class "
                           f"name ({', '.join(names)})")
    return torch.full((num,), k, dtype=torch.long)


GRID_MAX = 1024  # the PNG shows the first images; samples.npz holds them all


class SampleBatches:
    """The finished batches of a draw, one uint8 ``.npy`` each in ``folder``, for a rerun with the same settings
    (other settings start afresh); removed once the draw is complete."""

    PREFIX = "from-"  # one file per batch, named by its first image: from-000000128.npy

    def __init__(self, folder: Path, settings: dict):
        self.folder = folder
        settings = _as_read_back(settings)
        if folder.exists() and not self.made_with(folder, settings):
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files.write_json(folder / "settings.json", settings)

    @staticmethod
    def made_with(folder: Path, settings: dict) -> bool:
        """Whether the batches in ``folder`` were drawn with these settings."""
        path = folder / "settings.json"
        return path.exists() and files.read_json(path) == _as_read_back(settings)

    def _path(self, first: int) -> Path:
        return self.folder / f"{self.PREFIX}{first:09d}.npy"

    def has(self, first: int) -> bool:
        return self._path(first).exists()

    def get(self, first: int) -> np.ndarray | None:
        path = self._path(first)
        return np.load(path) if path.exists() else None

    def put(self, first: int, images: np.ndarray) -> np.ndarray:
        files.write_array_atomic(self._path(first), images)
        return images

    def count(self) -> int:
        return _batch_count(self.folder)

    def claim(self) -> bool:
        """True for exactly one of the processes that ask (an exclusive create): the one that writes the draw."""
        try:
            os.close(os.open(self.folder / "writing", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return True
        except FileExistsError:
            return False

    def release(self) -> None:
        """Give the writing back (a writer that fails or is stopped), so that a rerun of any process may write."""
        (self.folder / "writing").unlink(missing_ok=True)


def _batch_count(folder: Path) -> int:
    return len(list(folder.glob(f"{SampleBatches.PREFIX}*.npy")))


def _as_read_back(settings: dict) -> dict:
    return json.loads(json.dumps(settings))  # as settings.json reads back: tuples become lists


def batches_kept(o) -> tuple[int, int, Path]:
    """(finished batches, all batches, their folder) of a `sample` command stopped part-way."""
    folder = Path(o.out) / files.SAMPLE_BATCHES
    kept = _batch_count(folder) if SampleBatches.made_with(folder, _settings(o)) else 0
    return kept, -(-o.num // o.batch_size), folder


def _settings(o) -> dict:
    return {k: v for k, v in asdict(o).items() if k not in ("out", "device")}  # where it runs is not the draw


class _Guide:
    """What `sample` resolves from its options: the guiding classifier (or None), its run's config, the label of
    each image, and the diffusion model to sample with (name and flags)."""

    def __init__(self, o, device: torch.device):
        self.classifier, self.config, self.labels, self.model, self.flags = None, None, None, o.model, o.denoiser_flags
        if o.classifier is None:
            if o.class_ is not None:
                raise DiffAugError("argument --class needs --classifier (a `train --mode noisy|da` run that guides "
                                   "the sampler)")
            return
        if o.class_ is None:
            raise DiffAugError("argument --classifier needs --class (an index, a class name, or 'all')")
        self.classifier, self.config = load_classifier(o.classifier, device)
        if self.config.model.mode == "clean":
            raise DiffAugError(f"argument --classifier {o.classifier}: a clean-image classifier cannot guide "
                               "sampling; train one with `diffaug-fast train --mode noisy` or `--mode da`")
        trained_with, trained_flags = self.config.diffaug.denoiser, self.config.diffaug.denoiser_flags
        if o.model is None:
            self.model, self.flags = trained_with, trained_flags
        if not same_denoiser(self.model, trained_with):  # by content: any spelling of the same file
            raise DiffAugError(f"argument --classifier {o.classifier} was trained with the {trained_with!r} "
                               f"diffusion model; sample with --model {trained_with} (or leave --model out)")
        if (self.flags or None) != (trained_flags or None):
            raise DiffAugError(f"argument --denoiser-flags: --classifier {o.classifier} was trained with "
                               f"--denoiser-flags {trained_flags!r}; give the same (or leave --model out)")
        self.labels = class_labels(o.class_, classifier_classes(o.classifier, self.classifier.net.fc.out_features),
                                   o.num)

    def data(self):
        """What the samples imitate, for `fidelity`'s default reference: the guiding run's data, else the
        denoiser's."""
        return self.config.data.source if self.config is not None else denoiser_data(self.model or "fmnist")


def _sampling_denoiser(o, guide: _Guide, device: torch.device):
    denoiser = load_denoiser(guide.model or "fmnist", device, flags=guide.flags, option="--model")
    if o.compile:
        repair_inductor_cache()
        denoiser.net = torch.compile(denoiser.net)
    where = next(denoiser.parameters()).device
    dtype = resolve_precision(o.denoiser_precision, where)
    warn_if_emulated("--denoiser-precision", dtype, where)
    if dtype is not None:
        denoiser.net = PrecisionNet(denoiser.net, dtype)
    return denoiser


def check_steps(steps: str, chain_steps: int) -> None:
    """--steps can be taken from the denoiser's chain: said before the first batch, naming the option and the range."""
    from diffaug_fast.diffusion import space_timesteps

    try:
        space_timesteps(chain_steps, steps)
    except ValueError as err:
        if str(err).startswith("argument 'steps'"):  # not a step spec at all: its message says what one is
            raise DiffAugError(str(err).replace("argument 'steps'", "argument --steps", 1)) from None
        raise DiffAugError(f"argument --steps is {steps!r}: {err}; expected at most the denoiser's {chain_steps} "
                           f"steps (ddimN with N = ceil({chain_steps} / stride), e.g. ddim50; or N in 1..{chain_steps} "
                           "spread evenly)") from None


def sample_command(o) -> Path | None:
    """Sample ``o.num`` images (PNG grid + .npz in ``o.out``), ``o.batch_size`` at a time, each finished batch kept
    so that a stopped run continues; with ``o.classifier``, classifier-guided toward ``o.class_``. Without
    ``--model`` a guided run samples with the denoiser its classifier was trained on. Several processes
    (``sample_shard``) share the batches; the last to finish writes the draw. Returns the .npz's path, None for a
    process that left the writing to another."""
    from diffaug_fast.diffusion.sampling import chain_guidance, classifier_guidance, eps_model, sample

    device = run_device(o.device)  # an impossible --device or shard fails before anything loads
    rank, world = sample_shard()
    guide = _Guide(o, device)
    denoiser = _sampling_denoiser(o, guide, device)
    model, chain = eps_model(denoiser)
    check_steps(o.steps, len(chain))
    shape = denoiser.image_shape or (1, 28, 28)
    learned = denoiser.learn_sigma and denoiser.parametrization == "eps"  # eps_model passes the 2C output on

    def guidance_for(labels):
        if labels is None:
            return None
        index = denoiser.schedule.timesteps  # the classifier takes grid indices, the sampler passes timesteps
        # the classifier sees the denoiser's own x_t (a VE one's x_ve, not the VP chain's x_vp = a*x_ve), and the
        # gradient is taken with respect to the chain's x (chain_guidance)
        return chain_guidance(denoiser, classifier_guidance(
            lambda x, t: guide.classifier(x, torch.searchsorted(index.to(t.device), t)), labels.to(device)))

    out = Path(o.out)
    out.mkdir(parents=True, exist_ok=True)
    batches = SampleBatches(out / files.SAMPLE_BATCHES, _settings(o))
    firsts = range(0, o.num, o.batch_size)
    mine = firsts[rank::world]  # this process's share of the batches (all of them when it runs alone)
    drawn, seconds = 0, 0.0
    with tqdm(total=sum(min(o.batch_size, o.num - f) for f in mine), desc="samples", unit="img",
              disable=len(firsts) == 1) as bar:
        for first in mine:
            n = min(o.batch_size, o.num - first)
            if not batches.has(first):
                start = time.perf_counter()
                images = sample(model, (n, *shape), chain, steps=o.steps, mode=o.mode, eta=o.eta, seed=o.seed,
                                guidance=guidance_for(None if guide.labels is None else guide.labels[first:first + n]),
                                scale=o.scale, learn_sigma=learned, variance="learned" if learned else "fixed_small",
                                ddim_guidance=o.ddim_guidance, first=first, total=o.num, device=device,
                                progress=True if len(firsts) == 1 else f"batch {first // o.batch_size + 1} of "
                                                                       f"{len(firsts)}")
                batches.put(first, to_uint8(images).cpu().numpy())
                seconds, drawn = seconds + time.perf_counter() - start, drawn + n
            bar.update(n)
    speed = f" in {seconds:.1f} s ({drawn / seconds:.1f} images/s)" if drawn else ""
    if world > 1:
        waiting = sum(not batches.has(f) for f in firsts)
        if waiting or not batches.claim():  # the last process to finish writes the draw, once
            print(f"process {rank} of {world}: {len(mine)} of {len(firsts)} batches drawn{speed}; "
                  + (f"{waiting} batches still being drawn by the others; the last to finish writes "
                     f"{out / files.SAMPLES}" if waiting else f"another process writes {out / files.SAMPLES}"))
            return None
    try:
        _write_draw(o, out, batches, firsts, shape, guide)
    except BaseException:
        batches.release()
        raise
    by = "drawn by the other processes" if world > 1 else "kept from a stopped run"
    reused = f", {o.num - drawn} {by}" if drawn < o.num else ""
    print(f"{o.num} samples ({o.mode}, {o.steps}, seed {o.seed}){speed}{reused}: {out / files.SAMPLES_GRID}, "
          f"{out / files.SAMPLES}")
    return out / files.SAMPLES


def sample_shard() -> tuple[int, int]:
    """(rank, world size) of this process in a draw shared by several (torchrun, or RANK / WORLD_SIZE set by
    hand, e.g. from SLURM_PROCID / SLURM_NTASKS); (0, 1) alone. Process r draws batches r, r + N, ..."""
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if world < 1 or not 0 <= rank < world:
        raise DiffAugError(f"RANK={rank} and WORLD_SIZE={world} in the environment: expected 0 <= RANK < WORLD_SIZE")
    return rank, world


def _write_draw(o, out: Path, batches: SampleBatches, firsts: range, shape: tuple, guide: _Guide) -> None:
    """samples.png (the first GRID_MAX images) and samples.npz from the finished batches, one batch in memory at a
    time; then the batches go."""
    from torchvision.utils import save_image

    shown = np.concatenate([batches.get(f) for f in firsts if f < GRID_MAX])[:GRID_MAX]
    grid = torch.from_numpy(shown).float().div(255)
    labels = guide.labels
    nrow = int(labels.max()) + 1 if o.class_ == "all" else int(len(grid)**0.5 + 0.5)  # --class all: a column per class
    save_image(grid, out / files.SAMPLES_GRID, nrow=nrow, padding=1)
    extra = {"labels": labels.numpy()} if labels is not None else {}
    data = guide.data()
    if data is not None:
        extra["data"] = np.array(data)
    images = files.Chunks((o.num, *shape), np.uint8, (batches.get(first) for first in firsts))
    files.write_npz_atomic(out / files.SAMPLES, images=images, **extra)
    shutil.rmtree(batches.folder)
