"""Named random streams: every random draw of the package comes from (seed, purpose, index).

Randomness is keyed, never carried as hidden state, so that a resumed run, a data-parallel shard and a
single process all draw the same numbers. Two kinds of stream:

* **generators** (``torch.Generator``) for small draws on the host: data order, timesteps, crops, labeled
  subsets, evaluation noise. ``generator(seed, purpose, index)`` seeds one from the purpose's formula.
* **Philox noise** for ε inside the fused ``diffuse`` kernel: a Philox *key* (``philox_seed``) and an
  element *offset* (``batch_offset``). Image ``i`` of global step ``step`` draws its ε at element
  ``((lanes·step + lane)·batch + i)·numel(image)``; ``lanes`` separate streams that share a step
  (the semi-supervised step's labeled / unlabeled / fresh-pair images) so they never overlap.

The formulas below are the ones the project has always used (kept so that runs and shipped results
reproduce bit-exactly); what is new is that they live here, once, under a name. Index meaning per purpose:

=====================  ==========================  ============================================
purpose                index                       used by
=====================  ==========================  ============================================
``train_step``         global step                 crops, timesteps, AugMix seeds of a step;
                                                   ``DiffAug`` module: its call counter
``epoch_order``        epoch                       the classifier's data order
``denoiser_order``     epoch                       the denoiser trainer's data order
``labeled_subset``     —                           which examples keep their labels (SSL / PU)
``eval_noise``         —                           Gaussian noise of the noisy test set
``eval_noise_draws``   —                           the draws of the whole test set's / val split's noise
``eval_timesteps``     —                           t per test image, per-t-bucket evaluation
``eval_eps``           bucket k                    Philox key of that evaluation's ε
``tc_timesteps``       —                           t, t' of the consistency-disagreement metric
``tc_eps``             —                           Philox key of that metric's ε
``corruption``         10·corruption + severity    on-the-fly corruptions
``ood``                —                           synthetic OOD sets
``certify``            —                           randomized-smoothing noise
``report_timesteps``   —                           the denoiser report's t per image
``report_eps``         bucket k                    Philox key of the denoiser report's ε
``train_view``         step·batch + slot           RandomResizedCrop + flip of one training image
=====================  ==========================  ============================================
"""
from __future__ import annotations

import torch

_MASK = 2**63  # torch.Generator seeds are 64-bit; keep them non-negative

_FORMULAS = {
    "train_step": lambda seed, i: seed * 1_000_003 + i,
    "epoch_order": lambda seed, i: seed * 7_919 + i,
    "denoiser_order": lambda seed, i: seed * 1_000_003 + i,
    "labeled_subset": lambda seed, i: seed * 7_919 + 17 + i,
    "eval_noise": lambda seed, i: seed + 1 + i,
    "eval_noise_draws": lambda seed, i: seed * 7_919 + 9_000_001 + i,
    "eval_timesteps": lambda seed, i: seed + 2 + i,
    "eval_eps": lambda seed, i: seed + 1000 + i,
    "tc_timesteps": lambda seed, i: seed + 3 + i,
    "tc_eps": lambda seed, i: seed + 5000 + i,
    "corruption": lambda seed, i: seed * 1_000_003 + i,
    "ood": lambda seed, i: seed + 77 + i,
    "certify": lambda seed, i: seed + 4242 + i,
    "report_timesteps": lambda seed, i: seed + i,
    "report_eps": lambda seed, i: seed + i,
    "train_view": lambda seed, i: seed * 1_000_003 + 7_777_777_777 + i,
}
PURPOSES = tuple(_FORMULAS)


def stream_seed(seed: int, purpose: str, index: int = 0) -> int:
    """The integer seed of stream ``purpose`` at ``index`` for a run seeded with ``seed``."""
    if purpose not in _FORMULAS:
        raise ValueError(f"unknown random stream {purpose!r}; expected one of {', '.join(PURPOSES)}")
    return _FORMULAS[purpose](int(seed), int(index)) % _MASK


def generator(seed: int, purpose: str, index: int = 0) -> torch.Generator:
    """A CPU ``torch.Generator`` for stream ``purpose`` at ``index``."""
    return torch.Generator().manual_seed(stream_seed(seed, purpose, index))


def philox_seed(seed: int, purpose: str | None = None, index: int = 0) -> int:
    """The Philox key of the fused ``diffuse`` op: the run seed itself for training noise (``purpose=None``),
    else the named evaluation stream's key."""
    return int(seed) if purpose is None else stream_seed(seed, purpose, index)


def batch_offset(step: int, batch: int, first_image: int, image_numel: int, *, lane: int = 0,
                 lanes: int = 1) -> int:
    """Philox element offset of image ``first_image`` of global step ``step`` (global batch ``batch``) in
    ``lane`` of ``lanes`` streams that share the step; a shard passes its first global image index."""
    return ((lanes * step + lane) * batch + first_image) * image_numel
