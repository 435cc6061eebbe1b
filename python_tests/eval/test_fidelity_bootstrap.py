"""Bootstrap intervals of FID / KID: a redraw by counts is the redrawn set itself, the full set's numbers are
torch-fidelity's and SciPy's, and the interval narrows as the sample grows."""
import numpy as np
import pytest
import scipy.linalg
import torch
from torch_fidelity.metric_kid import kid_features_to_metric

from diffaug_fast.eval.fidelity_bootstrap import (_mean_off_diagonal_kernel, bootstrap_fid_kid, frechet_distance,
                                                  poly_kernel, weighted_fid_kid)


def _features(n, d=8, shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) * 0.3 + shift


def _stats(g, r):
    return (g, poly_kernel(g, g), poly_kernel(g, r).mean(1), r.mean(0), np.cov(r, rowvar=False),
            _mean_off_diagonal_kernel(r, block=7))  # an odd block size: the diagonal crosses block edges


def _scipy_fid(a, b):
    c1, c2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(c1 + c2 - 2 * scipy.linalg.sqrtm(c1 @ c2).real))


@pytest.mark.parametrize("n,d", [(300, 8), (57, 5)])
def test_full_set_matches_scipy_fid_and_torch_fidelity_kid(n, d):
    g, r = _features(n, d, shift=0.4, seed=1), _features(n, d, seed=2)
    fid, kid = weighted_fid_kid(np.ones(n), *_stats(g, r))
    assert fid == pytest.approx(_scipy_fid(g, r), rel=1e-6)
    # one subset of the whole size: torch-fidelity's KID is the unbiased MMD^2 of the full sets
    theirs = kid_features_to_metric(torch.from_numpy(g), torch.from_numpy(r), kid_subsets=1, kid_subset_size=n,
                                    kid_degree=3, kid_gamma=None, kid_coef0=1, kid_kernel="poly", verbose=False)
    assert kid == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-9, abs=1e-12)


def test_a_redraw_by_counts_equals_the_redrawn_set():
    g, r = _features(40, 6, shift=0.2, seed=3), _features(90, 6, seed=4)
    idx = np.random.default_rng(5).integers(0, len(g), len(g))
    fid, kid = weighted_fid_kid(np.bincount(idx, minlength=len(g)).astype(float), *_stats(g, r))
    drawn = g[idx]
    assert fid == pytest.approx(frechet_distance(drawn.mean(0), np.cov(drawn, rowvar=False), r.mean(0),
                                                 np.cov(r, rowvar=False)), rel=1e-9)
    different = idx[:, None] != idx[None, :]  # pairs of two copies of one sample are left out, like the diagonal
    k_rr = poly_kernel(r, r)
    expected = (poly_kernel(drawn, drawn)[different].mean() + (k_rr.sum() - np.trace(k_rr)) / (90 * 89)
                - 2 * poly_kernel(drawn, r).mean())
    assert kid == pytest.approx(expected, rel=1e-9)


def test_interval_brackets_the_spread_and_narrows_with_more_samples():
    r = _features(2000, seed=6)
    small = bootstrap_fid_kid(_features(100, shift=0.3, seed=7), r, resamples=300, seed=0)
    large = bootstrap_fid_kid(_features(1600, shift=0.3, seed=7), r, resamples=300, seed=0)
    for res in (small, large):
        assert res["fid_low"] < res["fid_high"] and res["kid_low"] < res["kid_high"]
        assert res["fid_low"] < res["fid"] * 1.5 and res["kid_low"] < res["kid"] < res["kid_high"]
    assert (large["fid_high"] - large["fid_low"]) < 0.5 * (small["fid_high"] - small["fid_low"])
    assert (large["kid_high"] - large["kid_low"]) < 0.5 * (small["kid_high"] - small["kid_low"])
    again = bootstrap_fid_kid(_features(100, shift=0.3, seed=7), r, resamples=300, seed=0)
    assert again == small  # the redraws are seeded


def test_bad_input_names_what_was_expected():
    with pytest.raises(ValueError, match="resamples must be positive"):
        bootstrap_fid_kid(_features(10), _features(10), resamples=0)
    with pytest.raises(ValueError, match=r"expected features \[N, D\] and \[M, D\]"):
        bootstrap_fid_kid(_features(10, d=4), _features(10, d=5))
    with pytest.raises(ValueError, match="at least 3 samples"):
        bootstrap_fid_kid(_features(2), _features(10))
