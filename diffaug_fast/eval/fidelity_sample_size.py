"""The sample sizes below which FID / IS / KID mean little, and the warning lines ``fidelity`` prints for them
(and writes to its JSON's ``"warnings"``). The thresholds and their sources: docs/guides/guidance.md, "Sample
sizes".

* FID fits a Gaussian to each set's features: with no more images than feature dimensions the covariance is
  rank-deficient and the distance meaningless; above that it is still biased upward at small N (Heusel et al.
  2017 ask for at least 10 000 samples; papers report FID-50k), so it is comparable only at equal N.
* IS averages over splits (torch-fidelity's isc_splits = 10; Salimans et al. 2016 used 50 000 samples in 10);
  each split's marginal class distribution needs many samples (Inception-v3 has 1 008 classes).
* KID is unbiased but averages MMDs of random subsets of torch-fidelity's kid_subset_size = 1 000 images, which
  must fit in either set: with fewer images the subsets shrink and the estimate is noisy.
"""
from __future__ import annotations

FID_MIN_SAMPLES = 10_000
IS_SPLITS = 10
IS_MIN_PER_SPLIT = 1_000
KID_SUBSET_SIZE = 1_000


def isc_splits(samples: int) -> int:
    """torch-fidelity's 10 splits, fewer for a handful of samples (at least 2 samples a split)."""
    return max(1, min(IS_SPLITS, samples // 2))


def kid_subset(generated: int, reference: int) -> int:
    """torch-fidelity's kid_subset_size, shrunk to the smaller set (torch-fidelity refuses a larger one)."""
    return min(KID_SUBSET_SIZE, generated, reference)


def fid_warning(generated: int, reference: int, feature_dim: int, extractor: str) -> str | None:
    smaller = min(generated, reference)
    if smaller <= feature_dim:
        return (f"FID is meaningless here: {smaller:,} images give a rank-deficient covariance of the "
                f"{feature_dim}-dimensional features of {extractor} (it needs more images than dimensions, and "
                f"{FID_MIN_SAMPLES:,} or more to compare with published FIDs)")
    if smaller < FID_MIN_SAMPLES:
        return (f"FID is biased upward with {smaller:,} images (< {FID_MIN_SAMPLES:,}; published FIDs use "
                "10,000-50,000): compare it only with FIDs of the same sample size and extractor")
    return None


def is_warning(generated: int) -> str | None:
    if generated >= IS_SPLITS * IS_MIN_PER_SPLIT:
        return None
    splits = isc_splits(generated)
    return (f"IS is unreliable with {generated:,} samples: {splits} split(s) of {generated // splits:,} "
            f"(it wants {IS_SPLITS} splits of >= {IS_MIN_PER_SPLIT:,}, {IS_SPLITS * IS_MIN_PER_SPLIT:,} samples "
            "in all; the literature uses 50,000)")


def kid_warning(generated: int, reference: int) -> str | None:
    subset = kid_subset(generated, reference)
    if subset >= KID_SUBSET_SIZE:
        return None
    return (f"KID is noisy: its subsets hold {subset:,} images, fewer than torch-fidelity's kid_subset_size "
            f"{KID_SUBSET_SIZE:,}")


def sample_size_warnings(generated: int, reference: int, feature_dim: int, extractor: str) -> list[str]:
    """One line per metric whose number means little with ``generated`` samples against ``reference`` images
    (``feature_dim``: the width of the features FID and KID read); empty when every metric has enough."""
    found = (fid_warning(generated, reference, feature_dim, extractor), is_warning(generated),
             kid_warning(generated, reference))
    return [w for w in found if w is not None]
