"""Evaluation subsets: which N test images an evaluation with a limit sees.

Not the first N: test sets are often sorted by class (an image folder's always are, ImageNet's val by folder), so a
prefix can hold only the first few classes. ``stratified_subset`` takes every class in proportion to its count
(largest remainder), the images of a class drawn by a fixed seed. The seed is ``EVAL_SUBSET_SEED``, never a run's
training seed: every run of a study, whatever its seed, is scored on the same images.
"""
from __future__ import annotations

import torch

EVAL_SUBSET_SEED = 0
SUBSET_RULE = "class-stratified"


def class_quotas(counts: list[int], n: int, generator: torch.Generator) -> list[int]:
    """Images per class for a subset of ``n`` of ``sum(counts)``: ``n·count/total`` rounded down, the images left
    over going one each to the classes with the largest remainders (ties in a seeded random order of the classes,
    so that n < classes does not always favour the first ones)."""
    total = sum(counts)
    quotas = [n * c // total for c in counts]
    tie_order = torch.randperm(len(counts), generator=generator).tolist()
    by_remainder = sorted(range(len(counts)), key=lambda k: (-(n * counts[k] % total), tie_order[k]))
    for k in by_remainder[:n - sum(quotas)]:
        quotas[k] += 1
    return quotas


def stratified_subset(labels: torch.Tensor, n: int | None, seed: int = EVAL_SUBSET_SEED) -> torch.Tensor:
    """Indices (int64, sorted) of a class-stratified subset of ``n`` of the examples labelled ``labels``: each class
    gets its share by ``class_quotas``, its images drawn at random by ``seed`` (the same subset on every call).
    ``n`` None or >= len(labels): every index."""
    labels = torch.as_tensor(labels).long().flatten()
    if n is None or n >= len(labels):
        return torch.arange(len(labels))
    if n < 0:
        raise ValueError(f"argument 'n' must be >= 0, got {n}")
    classes, counts = torch.unique(labels, return_counts=True)
    generator = torch.Generator().manual_seed(seed)
    quotas = class_quotas(counts.tolist(), n, generator)
    chosen = []
    for label, quota in zip(classes.tolist(), quotas):
        members = torch.nonzero(labels == label).flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:quota]])
    return torch.cat(chosen).sort().values


def class_counts(labels: torch.Tensor, num_classes: int | None = None) -> list[int]:
    """Examples per class label 0, 1, ...: what a report shows of a subset."""
    labels = torch.as_tensor(labels).long().flatten()
    return torch.bincount(labels, minlength=num_classes or 0).tolist()


def describe_subset(chosen: int, total: int, seed: int = EVAL_SUBSET_SEED, split: str = "test") -> str:
    """The line a report prints: e.g. "class-stratified, 1000 of 10000 test images, subset seed 0"."""
    if chosen >= total:
        return f"all {total} {split} images"
    return f"{SUBSET_RULE}, {chosen} of {total} {split} images, subset seed {seed}"


def subset_summary(labels: torch.Tensor, idx: torch.Tensor, seed: int = EVAL_SUBSET_SEED, split: str = "test") -> dict:
    """What metrics files record of the subset ``idx`` of a split labelled ``labels``: its description and the
    images it holds of each class."""
    labels = torch.as_tensor(labels).long().flatten()
    num_classes = int(labels.max()) + 1 if len(labels) else 0
    return {"eval_subset": describe_subset(len(idx), len(labels), seed, split),
            "eval_subset_class_counts": class_counts(labels[idx], num_classes)}


# The validation split: carved from the training images by a seed of its own (``--split-seed``), never a run's
# training seed, so that every run of a study, whatever its seed, trains on the same images and is selected on the
# same held-out ones.
SPLIT_SEED = 0
BUILTIN_VAL_SIZE = 5000  # Fashion-MNIST's: 5 000 of its 60 000 training images
FOLDER_VAL_FRACTION = 0.1  # CIFAR's and an image folder's: a tenth (CIFAR: 5 000 of 50 000)


def check_val_size(val_size: float) -> None:
    if val_size < 0 or (val_size >= 1 and val_size != int(val_size)):
        raise ValueError(f"argument --val-size must be 0, a fraction in (0, 1) or a whole number of images, "
                         f"got {val_size!r}")


def validation_count(val_size: float, total: int) -> int:
    """Images the validation split holds: ``val_size`` images when >= 1, that fraction of ``total`` when in (0, 1)
    (rounded: a tiny folder may get none), none for 0."""
    check_val_size(val_size)
    n = int(val_size) if val_size >= 1 else round(val_size * total)
    if n >= total:
        raise ValueError(f"argument --val-size {val_size:g} leaves no training images: the training split holds "
                         f"{total}")
    return n


def describe_split(chosen: int, seed: int = SPLIT_SEED) -> str:
    """The line metrics record of a validation split, e.g. "class-stratified, 5000 training images, split seed 0"."""
    return f"{SUBSET_RULE}, {chosen} training images held out, split seed {seed}"


def validation_split(labels: torch.Tensor, n_val: int, seed: int = SPLIT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices), both sorted and disjoint: a class-stratified ``n_val`` of the examples
    labelled ``labels`` (``stratified_subset`` with ``seed``) held out, the rest kept for training."""
    labels = torch.as_tensor(labels).long().flatten()
    held_out = stratified_subset(labels, n_val, seed) if n_val else torch.zeros(0, dtype=torch.int64)
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[held_out] = False
    return torch.nonzero(keep).flatten(), held_out
