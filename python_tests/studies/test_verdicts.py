"""The verdict rule of declared studies (diffaug_fast.studies.verdicts) against hand-computed cases, scipy's own
t test, Newcombe's 1998 worked examples and brute force."""
import json
import math

import numpy as np
import pytest
from scipy import stats

from diffaug_fast.studies.verdicts import (Interval, compare, paired_differences, seeds_to_resolve,
                                           t_interval, two_proportion_interval, verdict)

T_975_2 = 4.302652729911275  # t_{0.975, 2}, from tables


def iv(low, high, mean=None):
    return Interval(mean=(low + high) / 2 if mean is None else mean, low=low, high=high, sd=1.0, n=3, method="test")


# ---- paired differences -------------------------------------------------------------------------------------

def test_paired_differences_keeps_shared_seeds_sorted():
    seeds, d = paired_differences({2: 0.5, 0: 0.9, 7: 0.1}, {0: 0.8, 2: 0.75, 5: 0.3})
    assert seeds == [0, 2]
    assert d == pytest.approx([0.1, -0.25], abs=1e-15)


def test_paired_differences_rejects_nan():
    with pytest.raises(ValueError, match=r"\bb\b"):
        paired_differences({0: 0.5}, {0: float("nan")})


# ---- t interval ---------------------------------------------------------------------------------------------

def test_t_interval_hand_computed():
    r = t_interval([1.0, 2.0, 3.0])
    half = T_975_2 * 1.0 / math.sqrt(3)  # mean 2, sd 1
    assert r.mean == pytest.approx(2.0, abs=1e-12)
    assert r.sd == pytest.approx(1.0, abs=1e-12)
    assert r.n == 3
    assert r.low == pytest.approx(2.0 - half, abs=1e-9)
    assert r.high == pytest.approx(2.0 + half, abs=1e-9)
    assert half == pytest.approx(2.4841377, abs=1e-6)


@pytest.mark.parametrize("n", [2, 3, 5, 10, 30])
def test_t_interval_matches_scipy_ttest(n):
    d = np.random.default_rng(n).normal(0.3, 1.7, size=n)
    ci = stats.ttest_1samp(d, 0.0).confidence_interval(0.95)
    r = t_interval(d.tolist())
    assert r.low == pytest.approx(ci.low, abs=1e-9)
    assert r.high == pytest.approx(ci.high, abs=1e-9)
    ci90 = stats.ttest_1samp(d, 0.0).confidence_interval(0.90)
    r90 = t_interval(d.tolist(), confidence=0.90)
    assert (r90.low, r90.high) == pytest.approx((ci90.low, ci90.high), abs=1e-9)


def test_t_interval_zero_spread_is_a_point():
    r = t_interval([0.5, 0.5, 0.5])
    assert (r.low, r.high, r.sd) == (0.5, 0.5, 0.0)


@pytest.mark.parametrize("values", [[], [1.0]])
def test_t_interval_needs_two_values(values):
    with pytest.raises(ValueError, match="values"):
        t_interval(values)


@pytest.mark.parametrize("confidence", [0.0, 1.0, 95])
def test_t_interval_rejects_bad_confidence(confidence):
    with pytest.raises(ValueError, match="confidence"):
        t_interval([1.0, 2.0], confidence=confidence)


# ---- Newcombe's interval for a difference of proportions ----------------------------------------------------

def wilson_by_roots(k, n, z):
    """Wilson's interval as the two roots of (p - π)² = z² π (1 - π) / n, solved with numpy's polynomial roots."""
    p = k / n
    roots = np.roots([1 + z * z / n, -(2 * p + z * z / n), p * p]).real
    return float(min(roots)), float(max(roots))


def newcombe_by_hand(k1, n1, k2, n2, confidence=0.95):
    z = stats.norm.ppf(0.5 + confidence / 2)
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_by_roots(k1, n1, z)
    l2, u2 = wilson_by_roots(k2, n2, z)
    return p1 - p2 - math.hypot(p1 - l1, u2 - p2), p1 - p2 + math.hypot(u1 - p1, p2 - l2)


# Newcombe (1998), Statistics in Medicine 17:873-890, Table II, method 10 (score, no continuity correction).
NEWCOMBE_TABLE_II = [
    ((56, 70, 48, 80), (0.0524, 0.3339)),
    ((9, 10, 3, 10), (0.1705, 0.8090)),
    ((5, 56, 0, 29), (-0.0381, 0.1926)),
    ((0, 10, 0, 20), (-0.1611, 0.2775)),
    ((0, 10, 0, 10), (-0.2775, 0.2775)),
]


@pytest.mark.parametrize("counts,published", NEWCOMBE_TABLE_II)
def test_newcombe_matches_the_paper_and_an_independent_computation(counts, published):
    k1, n1, k2, n2 = counts
    r = two_proportion_interval(k1 / n1, k2 / n2, n1, n2)
    assert r.mean == pytest.approx(k1 / n1 - k2 / n2, abs=1e-12)
    assert (r.low, r.high) == pytest.approx(published, abs=5e-5)
    assert (r.low, r.high) == pytest.approx(newcombe_by_hand(*counts), abs=1e-9)
    assert r.sd is None and r.n == 1
    assert "one run" in r.method and "Newcombe" in r.method


def test_newcombe_at_another_confidence_and_large_n():
    counts = (9024, 10000, 9036, 10000)
    r = two_proportion_interval(0.9024, 0.9036, 10000, 10000, confidence=0.9)
    assert (r.low, r.high) == pytest.approx(newcombe_by_hand(*counts, confidence=0.9), abs=1e-9)
    # with many images it approaches the normal (Wald) interval
    se = math.sqrt(0.9024 * 0.0976 / 1e4 + 0.9036 * 0.0964 / 1e4)
    z = stats.norm.ppf(0.95)
    assert (r.low, r.high) == pytest.approx((-0.0012 - z * se, -0.0012 + z * se), abs=2e-5)


@pytest.mark.parametrize("kwargs,name", [
    (dict(p_a=1.2, p_b=0.5, n_a=10, n_b=10), "p_a"),
    (dict(p_a=0.5, p_b=-0.1, n_a=10, n_b=10), "p_b"),
    (dict(p_a=0.5, p_b=0.5, n_a=0, n_b=10), "n_a"),
    (dict(p_a=0.5, p_b=0.5, n_a=10, n_b=2.5), "n_b"),
])
def test_newcombe_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        two_proportion_interval(**kwargs)


# ---- verdicts -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("low,high,expected", [
    (0.1, 2.0, "supported"), (1e-12, 1.0, "supported"),
    (0.0, 2.0, "inconclusive"), (-0.5, 0.5, "inconclusive"), (-2.0, 0.0, "inconclusive"),
    (-2.0, -1e-12, "contradicted"), (-2.0, -0.1, "contradicted"),
])
def test_verdict_greater(low, high, expected):
    assert verdict(iv(low, high), "greater") == expected


@pytest.mark.parametrize("low,high,expected", [
    (-2.0, -0.1, "supported"), (-1.0, -1e-12, "supported"),
    (-2.0, 0.0, "inconclusive"), (-0.5, 0.5, "inconclusive"), (0.0, 2.0, "inconclusive"),
    (1e-12, 2.0, "contradicted"), (0.1, 2.0, "contradicted"),
])
def test_verdict_less(low, high, expected):
    assert verdict(iv(low, high), "less") == expected


@pytest.mark.parametrize("low,high,expected", [
    (-0.4, 0.3, "supported"), (-0.5 + 1e-9, 0.0, "supported"), (0.2, 0.9, "supported"),
    (-0.5, 0.3, "inconclusive"), (-0.9, 0.1, "inconclusive"), (-0.9, -0.5, "inconclusive"),
    (-0.9, -0.5 - 1e-9, "contradicted"), (-2.0, -1.0, "contradicted"),
])
def test_verdict_keeps(low, high, expected):
    assert verdict(iv(low, high), "keeps", margin=0.5) == expected


@pytest.mark.parametrize("margin", [None, 0.0, -0.5, float("nan"), float("inf")])
def test_keeps_needs_a_positive_margin(margin):
    with pytest.raises(ValueError, match="margin"):
        verdict(iv(-0.1, 0.1), "keeps", margin=margin)
    with pytest.raises(ValueError, match="margin"):
        seeds_to_resolve(0.1, 1.0, "keeps", margin=margin)


@pytest.mark.parametrize("direction", ["greater", "less"])
def test_margin_belongs_to_keeps_only(direction):
    with pytest.raises(ValueError, match="margin"):
        verdict(iv(-0.1, 0.1), direction, margin=0.5)


@pytest.mark.parametrize("direction", ["higher", "Greater", "", None])
def test_bad_direction_names_the_expected_values(direction):
    with pytest.raises(ValueError, match="direction") as e:
        verdict(iv(-0.1, 0.1), direction)
    assert all(d in str(e.value) for d in ("greater", "less", "keeps"))
    with pytest.raises(ValueError, match="direction"):
        seeds_to_resolve(0.1, 1.0, direction)
    with pytest.raises(ValueError, match="direction"):
        compare({0: 0.5, 1: 0.6}, {0: 0.4, 1: 0.5}, direction)


# ---- seeds to resolve ---------------------------------------------------------------------------------------

def brute_force_seeds(distance, sd, max_seeds=100):
    for n in range(2, max_seeds + 1):
        if stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) < distance:
            return n
    return None


@pytest.mark.parametrize("mean,sd", [(0.3, 1.0), (-0.3, 1.0), (1.0, 0.4), (0.05, 0.2), (2.0, 10.0), (0.01, 3.0),
                                     (5.0, 1.0)])
@pytest.mark.parametrize("direction", ["greater", "less"])
def test_seeds_to_resolve_matches_brute_force(mean, sd, direction):
    assert seeds_to_resolve(mean, sd, direction) == brute_force_seeds(abs(mean), sd)


@pytest.mark.parametrize("mean,sd", [(-0.3, 0.5), (0.0, 1.0), (-0.45, 0.1), (0.2, 2.0)])
def test_seeds_to_resolve_keeps_matches_brute_force(mean, sd):
    assert seeds_to_resolve(mean, sd, "keeps", margin=0.5) == brute_force_seeds(mean + 0.5, sd)


def test_seeds_to_resolve_hand_computed():
    # n = 3: t_{0.975,2} / √3 = 2.484 > 2; n = 4: t_{0.975,3} = 3.182 / 2 = 1.591 < 2
    assert seeds_to_resolve(2.0, 1.0, "greater") == 4
    # the resolved interval at that n really decides the verdict, and one seed fewer does not
    assert stats.t.ppf(0.975, 3) / 2 < 2.0 < stats.t.ppf(0.975, 2) / math.sqrt(3)


@pytest.mark.parametrize("args,kwargs", [
    ((0.5, 0.0, "greater"), {}),                 # no spread: nothing to resolve
    ((0.0, 1.0, "greater"), {}),                 # mean on the threshold
    ((-0.5, 1.0, "keeps"), dict(margin=0.5)),    # mean + margin = 0
    ((-0.8, 1.0, "keeps"), dict(margin=0.5)),    # mean below -margin
    ((0.01, 1.0, "greater"), {}),                # would need far more than 100 seeds
    ((0.3, 1.0, "greater"), dict(max_seeds=10)),
])
def test_seeds_to_resolve_none(args, kwargs):
    assert seeds_to_resolve(*args, **kwargs) is None


def test_seeds_to_resolve_max_seeds_is_inclusive():
    n = seeds_to_resolve(0.3, 1.0, "greater")
    assert n is not None and n > 2
    assert seeds_to_resolve(0.3, 1.0, "greater", max_seeds=n) == n
    assert seeds_to_resolve(0.3, 1.0, "greater", max_seeds=n - 1) is None


@pytest.mark.parametrize("kwargs,name", [
    (dict(mean=0.5, sd=-1.0), "sd"), (dict(mean=float("nan"), sd=1.0), "mean"),
    (dict(mean=0.5, sd=1.0, max_seeds=1), "max_seeds"), (dict(mean=0.5, sd=1.0, max_seeds=2.5), "max_seeds"),
])
def test_seeds_to_resolve_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        seeds_to_resolve(direction="greater", **kwargs)


# ---- compare ------------------------------------------------------------------------------------------------

def test_compare_over_seeds():
    a = {0: 0.9018, 1: 0.9025, 2: 0.9011, 3: 0.95}
    b = {0: 0.9036, 1: 0.9010, 2: 0.9050, 9: 0.1}
    r = compare(a, b, "greater")
    json.dumps(r)
    d = [100 * (a[s] - b[s]) for s in (0, 1, 2)]
    ci = stats.ttest_1samp(d, 0.0).confidence_interval(0.95)
    assert r["seeds"] == [0, 1, 2]
    assert r["differences"] == pytest.approx(d, abs=1e-4)
    assert r["interval"]["low"] == pytest.approx(ci.low, abs=1e-4)
    assert r["interval"]["high"] == pytest.approx(ci.high, abs=1e-4)
    assert r["interval"]["mean"] == pytest.approx(np.mean(d), abs=1e-4)
    assert r["interval"]["sd"] == pytest.approx(np.std(d, ddof=1), abs=1e-4)
    assert r["interval"]["n"] == 3
    assert r["verdict"] == "inconclusive"
    assert r["seeds_to_resolve"] == brute_force_seeds(abs(np.mean(d)), np.std(d, ddof=1))
    assert "t" in r["method"] and "3 seeds" in r["method"]


def test_compare_supported_and_contradicted_have_no_seed_count():
    a = {0: 0.60, 1: 0.62, 2: 0.61}
    b = {0: 0.50, 1: 0.51, 2: 0.505}
    assert compare(a, b, "greater")["verdict"] == "supported"
    assert compare(a, b, "less")["verdict"] == "contradicted"
    assert compare(b, a, "greater")["verdict"] == "contradicted"
    assert compare(a, b, "greater")["seeds_to_resolve"] is None


def test_compare_keeps_margin_is_in_points():
    a = {0: 0.9000, 1: 0.9010, 2: 0.9005}
    b = {0: 0.9020, 1: 0.9025, 2: 0.9030}   # a is 0.15 to 0.25 points lower
    assert compare(a, b, "keeps", margin=0.5)["verdict"] == "supported"
    assert compare(a, b, "keeps", margin=0.05)["verdict"] == "contradicted"
    raw = compare(a, b, "keeps", margin=0.005, scale=1.0)
    assert raw["verdict"] == "supported"
    assert raw["differences"][0] == pytest.approx(-0.002, abs=1e-9)


def test_compare_one_seed_with_images_uses_newcombe_in_points():
    r = compare({3: 0.8}, {3: 0.6}, "greater", images=75)
    json.dumps(r)
    low, high = newcombe_by_hand(60, 75, 45, 75)
    assert r["seeds"] == [3]
    assert r["interval"]["low"] == pytest.approx(100 * low, abs=1e-3)
    assert r["interval"]["high"] == pytest.approx(100 * high, abs=1e-3)
    assert r["interval"]["sd"] is None and r["interval"]["n"] == 1
    assert r["verdict"] == "supported"
    assert r["method"] == "Newcombe (Wilson) over images, one run"
    assert r["seeds_to_resolve"] is None


def test_compare_one_seed_inconclusive_over_images_has_no_seed_count():
    r = compare({0: 0.9024}, {0: 0.9036}, "greater", images=10000)
    assert r["verdict"] == "inconclusive" and r["seeds_to_resolve"] is None and r["interval"] is not None


def test_compare_one_seed_without_images_is_inconclusive_with_a_reason():
    r = compare({0: 0.95, 1: 0.9}, {0: 0.5}, "greater")
    json.dumps(r)
    assert r["interval"] is None
    assert r["verdict"] == "inconclusive"
    assert r["seeds_to_resolve"] is None
    assert r["reason"] and "image" in r["reason"]


def test_compare_without_shared_seeds_is_inconclusive_with_a_reason():
    r = compare({0: 0.9}, {1: 0.8}, "greater", images=100)
    assert r["seeds"] == [] and r["interval"] is None and r["verdict"] == "inconclusive" and r["reason"]


@pytest.mark.parametrize("kwargs,name", [(dict(scale=0.0), "scale"), (dict(margin=0.5), "margin"),
                                         (dict(confidence=1.5), "confidence")])
def test_compare_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        compare({0: 0.5, 1: 0.6}, {0: 0.4, 1: 0.5}, "greater", **kwargs)


def test_compare_one_seed_images_need_proportions():
    with pytest.raises(ValueError, match="p_a"):
        compare({0: 91.5}, {0: 0.9}, "greater", images=100)


def test_seeds_to_resolve_needs_a_strictly_narrower_interval():
    # at n = 4 the half width t_{0.975,3} · 1 / √4 equals the mean exactly: that interval would touch 0, undecided
    mean = float(stats.t.ppf(0.975, 3)) / 2
    assert stats.t.ppf(0.975, 3) * 1.0 / math.sqrt(4) == mean
    assert seeds_to_resolve(mean, 1.0, "greater") == 5
