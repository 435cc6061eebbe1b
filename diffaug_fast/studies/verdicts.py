"""The verdict rule of a declared study: pure functions from per-seed numbers to "supported" / "contradicted" /
"inconclusive".

A comparison is paired by seed (the same seed drives data order and initialisation in both variants, so the
difference a_s − b_s removes the seed's share of the spread). With two or more seeds the verdict rests on a 95 %
Student-t interval of the mean difference; with a single seed there is no spread over seeds to speak of, and the
only honest interval is the one over the test images of that one run (Newcombe's hybrid score interval for a
difference of two proportions), which ignores the seed-to-seed spread and so gives a weaker, "one run" verdict.
That interval is for independent samples: a claim comparing two metrics of the same runs (say DiffAug-Ensemble
against plain accuracy of one classifier, on the same images) gets none from a single seed.
An interval that merely touches the threshold does not decide anything: the comparisons are strict.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np
from scipy.stats import norm, t as student_t

DIRECTIONS = ("greater", "less", "keeps")
VERDICTS = ("supported", "contradicted", "inconclusive")
ONE_RUN_METHOD = "Newcombe (Wilson) over images, one run"


@dataclass(frozen=True)
class Interval:
    """A confidence interval for a mean difference. ``sd`` is the sample standard deviation of the values it was
    computed from (None for the one-run interval over images, which has no spread over seeds); ``n`` counts the
    values (seeds), 1 for the one-run interval."""

    mean: float
    low: float
    high: float
    sd: float | None
    n: int
    method: str


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")


def _check_direction(direction: str, margin: float | None) -> None:
    """`margin` belongs to "keeps" alone: required and > 0 there, so that a mis-declared comparison fails loudly."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(map(repr, DIRECTIONS))}, got {direction!r}")
    if direction == "keeps":
        if margin is None or not math.isfinite(margin) or margin <= 0:
            raise ValueError(f'margin must be a finite number > 0 for direction "keeps", got {margin!r}')
    elif margin is not None:
        raise ValueError(f'margin applies to direction "keeps" only, got margin={margin!r} for {direction!r}')


def paired_differences(a: Mapping[int, float], b: Mapping[int, float]) -> tuple[list[int], list[float]]:
    """The seeds both sides have, sorted, and a_s − b_s for each: pairing by seed is what makes the seeds'
    shared randomness cancel."""
    for name, values in (("a", a), ("b", b)):
        bad = {s: v for s, v in values.items() if not math.isfinite(v)}
        if bad:
            raise ValueError(f"{name} has non-finite values: {bad}")
    seeds = sorted(set(a) & set(b))
    return seeds, [float(a[s]) - float(b[s]) for s in seeds]


def t_interval(values: Iterable[float], confidence: float = 0.95) -> Interval:
    """mean ± t_{(1+confidence)/2, n−1} · sd / √n: the interval for a mean over a few seeds, where the normal
    quantile would be too narrow."""
    _check_confidence(confidence)
    x = np.asarray(list(values), dtype=np.float64)
    if x.ndim != 1 or x.size < 2:
        raise ValueError(f"values must hold at least 2 numbers for a t interval, got {x.size}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"values must be finite, got {x.tolist()}")
    n = int(x.size)
    mean = float(x.mean())
    sd = float(x.std(ddof=1))
    half = float(student_t.ppf((1.0 + confidence) / 2.0, n - 1)) * sd / math.sqrt(n)
    return Interval(mean=mean, low=mean - half, high=mean + half, sd=sd, n=n, method="Student t over seeds")


def _wilson(p: float, n: int, z: float) -> tuple[float, float]:
    """Wilson's score interval of one proportion (no continuity correction)."""
    z2n = z * z / n
    centre = (p + z2n / 2.0) / (1.0 + z2n)
    half = z / (1.0 + z2n) * math.sqrt(p * (1.0 - p) / n + z2n / (4.0 * n))
    return centre - half, centre + half


def two_proportion_interval(p_a: float, p_b: float, n_a: int, n_b: int, confidence: float = 0.95) -> Interval:
    """Interval for p_a − p_b, two accuracies over n_a and n_b images (Newcombe 1998, method 10: the hybrid
    score interval built from each proportion's Wilson interval). It stays inside [−1, 1] and behaves near 0 and
    1, where the plain normal approximation does not. Used for a single run per side only."""
    _check_confidence(confidence)
    for name, p in (("p_a", p_a), ("p_b", p_b)):
        if not (math.isfinite(p) and 0.0 <= p <= 1.0):
            raise ValueError(f"{name} must be a proportion in [0, 1], got {p!r}")
    for name, n in (("n_a", n_a), ("n_b", n_b)):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"{name} must be a positive whole number of images, got {n!r}")
    z = float(norm.ppf((1.0 + confidence) / 2.0))
    l_a, u_a = _wilson(p_a, int(n_a), z)
    l_b, u_b = _wilson(p_b, int(n_b), z)
    d = p_a - p_b
    low = d - math.sqrt((p_a - l_a) ** 2 + (u_b - p_b) ** 2)
    high = d + math.sqrt((u_a - p_a) ** 2 + (p_b - l_b) ** 2)
    return Interval(mean=d, low=low, high=high, sd=None, n=1, method=ONE_RUN_METHOD)


def verdict(interval: Interval, direction: str, margin: float | None = None) -> str:
    """What the interval says about the claim. greater: supported when the whole interval is above 0,
    contradicted when it is wholly below; less: the mirror; keeps (no worse than −margin, in the interval's
    units): supported when the interval is above −margin, contradicted when below. Anything touching the
    threshold is inconclusive."""
    _check_direction(direction, margin)
    low, high = interval.low, interval.high
    if direction == "greater":
        return "supported" if low > 0 else "contradicted" if high < 0 else "inconclusive"
    if direction == "less":
        return "supported" if high < 0 else "contradicted" if low > 0 else "inconclusive"
    return "supported" if low > -margin else "contradicted" if high < -margin else "inconclusive"


def _distance(mean: float, direction: str, margin: float | None) -> float:
    """How far the interval's half width must shrink for the verdict to be decided at this mean."""
    if direction == "keeps":
        return mean + margin
    return abs(mean)  # either way decides greater / less: above 0 or below 0


def seeds_to_resolve(mean: float, sd: float, direction: str, margin: float | None = None, max_seeds: int = 100,
                     *, confidence: float = 0.95) -> int | None:
    """The smallest n ≥ 2 whose t interval at this mean and spread, t_{0.975, n−1} · sd / √n, would be narrower
    than the distance to the threshold (|mean| for greater / less; mean + margin for keeps): how many seeds an
    inconclusive comparison would need if the spread stayed as observed. None when no number of seeds helps
    (sd = 0, the distance is ≤ 0) or more than ``max_seeds`` would be needed."""
    _check_direction(direction, margin)
    _check_confidence(confidence)
    if not math.isfinite(mean):
        raise ValueError(f"mean must be finite, got {mean!r}")
    if not (math.isfinite(sd) and sd >= 0):
        raise ValueError(f"sd must be a finite number >= 0, got {sd!r}")
    if isinstance(max_seeds, bool) or not isinstance(max_seeds, (int, np.integer)) or max_seeds < 2:
        raise ValueError(f"max_seeds must be a whole number >= 2, got {max_seeds!r}")
    distance = _distance(mean, direction, margin)
    if sd == 0 or distance <= 0:
        return None
    n = np.arange(2, int(max_seeds) + 1)
    half = student_t.ppf((1.0 + confidence) / 2.0, n - 1) * sd / np.sqrt(n)
    hits = np.nonzero(half < distance)[0]
    return int(n[hits[0]]) if hits.size else None


def _num(x: float | None) -> float | None:
    """Six significant digits: readable, stable JSON whatever the metric's scale."""
    return None if x is None else float(f"{x:.6g}")


def _interval_json(iv: Interval | None) -> dict | None:
    if iv is None:
        return None
    return {"mean": _num(iv.mean), "low": _num(iv.low), "high": _num(iv.high), "sd": _num(iv.sd), "n": iv.n}


def compare(a_values: Mapping[int, float], b_values: Mapping[int, float], direction: str, *,
            margin: float | None = None, scale: float = 100.0, images: int | None = None,
            images_b: int | None = None, same_runs: bool = False, confidence: float = 0.95) -> dict:
    """One declared comparison, a − b paired by seed, as a JSON-ready dict. Values are raw (fractions for
    accuracies); differences, the interval and ``margin`` are in shown units (raw × ``scale``: points for
    percentages). Two or more shared seeds: t interval over seeds. One seed: the interval over ``images`` test
    images of that run (``images_b`` on b's side when b's metric counts other images; default ``images``), when
    the metric declares them; else no interval and an inconclusive verdict. ``same_runs``: a and b are two metrics
    of the same runs, on the same images, so the one-run interval (for independent samples) does not hold: one
    seed gives no interval."""
    _check_direction(direction, margin)
    _check_confidence(confidence)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    seeds, raw = paired_differences(a_values, b_values)
    differences = [d * scale for d in raw]
    interval: Interval | None = None
    reason = None
    if len(seeds) >= 2:
        interval = t_interval(differences, confidence)
        method = f"Student t over {len(seeds)} seeds, paired by seed"
    elif len(seeds) == 1 and same_runs:
        method = "none"
        reason = "one run: a paired comparison of two metrics on the same images needs seeds"
    elif len(seeds) == 1 and images is not None:
        s = seeds[0]
        iv = two_proportion_interval(float(a_values[s]), float(b_values[s]), images,
                                     images if images_b is None else images_b, confidence)
        interval = Interval(mean=iv.mean * scale, low=iv.low * scale, high=iv.high * scale, sd=None, n=1,
                            method=iv.method)
        method = ONE_RUN_METHOD
    else:
        method = "none"
        if seeds:
            reason = "one seed and the metric declares no image count: no interval"
        else:
            reason = "no run has both metrics" if same_runs else "no seed has runs of both variants"
    result = verdict(interval, direction, margin) if interval is not None else "inconclusive"
    to_resolve = None
    if result == "inconclusive" and interval is not None and interval.sd is not None:
        to_resolve = seeds_to_resolve(interval.mean, interval.sd, direction, margin, confidence=confidence)
    return {"direction": direction, "margin": margin, "confidence": confidence, "scale": scale,
            "seeds": list(seeds), "differences": [_num(d) for d in differences],
            "interval": _interval_json(interval), "method": method, "verdict": result,
            "seeds_to_resolve": to_resolve, "reason": reason}
