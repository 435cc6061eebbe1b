"""Bootstrap intervals for FID and KID: how much would the numbers move with another draw of the samples?

FID and KID of a few hundred or thousand samples carry sampling noise comparable to the differences people
report between samplers or guidance scales. Here the generated set is redrawn with replacement (the real test
set stays fixed: it is the yardstick, not the thing measured) and FID / KID are recomputed from the extractor's
features; the 2.5 and 97.5 percentiles of the redraws give a 95 % interval.

A redraw is a vector of counts ``w`` (how often each sample was drawn), so nothing is copied: the weighted mean
and covariance give FID, and the kernel sums ``w^T K w`` give KID. KID is the unbiased MMD^2 with torch-fidelity's
polynomial kernel ``(x.y / d + 1)^3``, computed on all samples at once (torch-fidelity averages it over random
subsets; both estimate the same quantity). Pairs of copies of one sample are left out of the within-set sum,
as the diagonal is for the full set.
"""
from __future__ import annotations

import numpy as np


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """|mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2)); the square root's trace from the eigenvalues of the
    symmetric sqrt(C1) C2 sqrt(C1), which has no complex round-off as a general matrix square root does."""
    w1, v1 = np.linalg.eigh(cov1)
    root1 = (v1 * np.sqrt(np.clip(w1, 0, None))) @ v1.T
    middle = np.linalg.eigvalsh(root1 @ cov2 @ root1)
    root_trace = np.sum(np.sqrt(np.clip(middle, 0, None)))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * root_trace)


def poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """torch-fidelity's KID kernel: (x.y / d + 1)^3."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _mean_off_diagonal_kernel(x: np.ndarray, block: int = 2000) -> float:
    """Mean of k(x_i, x_j) over i != j, in row blocks (10 000 reference images would need 800 MB at once)."""
    total = 0.0
    for i in range(0, len(x), block):
        k = poly_kernel(x[i:i + block], x)
        total += k.sum() - np.trace(k, offset=i)  # the block's slice of the diagonal sits at column offset i
    return total / (len(x) * (len(x) - 1))


def weighted_fid_kid(w: np.ndarray, generated: np.ndarray, k_gg: np.ndarray, k_gr_mean: np.ndarray,
                     mu_r: np.ndarray, cov_r: np.ndarray, k_rr: float) -> tuple[float, float]:
    """FID and KID of the generated set with sample i counted w[i] times (w = ones: the set itself)."""
    n = w.sum()
    mu = w @ generated / n
    centred = generated - mu
    cov = (centred * w[:, None]).T @ centred / (n - 1)
    pairs = n * n - np.sum(w * w)  # ordered pairs of different draws, copies of one sample excluded
    k_gg_mean = (w @ k_gg @ w - np.sum(w * w * np.diag(k_gg))) / pairs
    kid = k_gg_mean + k_rr - 2.0 * (w @ k_gr_mean) / n
    return frechet_distance(mu, cov, mu_r, cov_r), float(kid)


def bootstrap_fid_kid(generated: np.ndarray, reference: np.ndarray, *, resamples: int = 1000, seed: int = 0,
                      level: float = 0.95) -> dict:
    """FID and KID of generated features [N, D] against reference features [M, D], each with a percentile
    interval over ``resamples`` redraws of the generated set. Returns a dict of floats."""
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples}")
    if generated.ndim != 2 or reference.ndim != 2 or generated.shape[1] != reference.shape[1]:
        raise ValueError(f"expected features [N, D] and [M, D], got {generated.shape} and {reference.shape}")
    if len(generated) < 3:
        raise ValueError(f"a bootstrap needs at least 3 samples, got {len(generated)}")
    g, r = generated.astype(np.float64), reference.astype(np.float64)
    mu_r, cov_r = r.mean(0), np.cov(r, rowvar=False)
    k_gg = poly_kernel(g, g)
    k_gr_mean = np.concatenate([poly_kernel(g[i:i + 1000], r).mean(1) for i in range(0, len(g), 1000)])
    k_rr = _mean_off_diagonal_kernel(r)
    stats = (g, k_gg, k_gr_mean, mu_r, cov_r, k_rr)
    fid, kid = weighted_fid_kid(np.ones(len(g)), *stats)
    rng = np.random.default_rng(seed)
    draws = np.array([weighted_fid_kid(rng.multinomial(len(g), np.full(len(g), 1.0 / len(g))).astype(np.float64),
                                       *stats) for _ in range(resamples)])
    tail = 100 * (1 - level) / 2
    (fid_low, kid_low), (fid_high, kid_high) = np.percentile(draws, [tail, 100 - tail], axis=0)
    return {"fid": fid, "fid_low": float(fid_low), "fid_high": float(fid_high),
            "kid": kid, "kid_low": float(kid_low), "kid_high": float(kid_high),
            "resamples": resamples, "level": level, "samples": len(g), "reference": len(r)}
