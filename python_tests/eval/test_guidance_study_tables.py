"""scripts/guidance_study.py's summary over classifier seeds: the mean ± std per setting and the DA − noisy gaps,
paired by seed, that the claims about 'DA guides better' are read from."""
import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import guidance_study  # noqa: E402

KEYS = ("frechet_inception_distance", "kernel_inception_distance_mean", "inception_score_mean", "judge_accuracy")


def fidelity(fid: float, kid: float, inception: float, judge: float) -> dict:
    return dict(zip(KEYS, (fid, kid, inception, judge)))


@pytest.fixture
def sweep() -> dict:
    # scale 2: DA better on FID for seeds 0 and 2 only; judge ahead on every seed. Scale 8: DA worse everywhere.
    noisy = {("noisy", "2", s): fidelity(7.0 + s, 0.17, 2.2, 0.26 + 0.01 * s) for s in range(3)}
    da = {("da", "2", 0): fidelity(6.5, 0.16, 2.3, 0.30), ("da", "2", 1): fidelity(8.5, 0.18, 2.1, 0.28),
          ("da", "2", 2): fidelity(8.0, 0.15, 2.4, 0.31)}
    noisy8 = {("noisy", "8", s): fidelity(4.0, 0.10, 3.6, 0.60) for s in range(3)}
    da8 = {("da", "8", s): fidelity(4.5 + 0.1 * s, 0.12, 3.5, 0.55) for s in range(3)}
    return {("unguided", 0, None): fidelity(7.5, 0.18, 2.2, 0.1), **noisy, **da, **noisy8, **da8}


def rows(lines: list[str], first: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith(f"| {first}")]


def test_mean_and_std_over_seeds(sweep):
    lines = guidance_study.sweep_summary(sweep)
    (da2,) = [r for r in rows(lines, "da") if r[1] == "2"]
    fids = [6.5, 8.5, 8.0]
    assert da2[2] == f"{statistics.mean(fids):.2f} ± {statistics.stdev(fids):.2f}"
    judges = [30, 28, 31]
    assert da2[5] == f"{statistics.mean(judges):.1f} ± {statistics.stdev(judges):.1f}"
    assert len(rows(lines, "noisy")) == 2  # one row per scale, the unguided setting left out


def test_gaps_are_paired_by_seed_and_count_the_better_direction(sweep):
    lines = guidance_study.sweep_summary(sweep)
    gap2, gap8 = rows(lines, "2")[-1], rows(lines, "8")[-1]
    fid_gaps = [6.5 - 7.0, 8.5 - 8.0, 8.0 - 9.0]  # DA − noisy of the same seed
    assert gap2[1] == f"{statistics.mean(fid_gaps):+.2f} ± {statistics.stdev(fid_gaps):.2f}"
    assert gap2[2] == "2 of 3"  # lower FID is better
    assert gap2[8] == "3 of 3"  # higher judge accuracy is better
    assert gap8[2] == "0 of 3" and gap8[8] == "0 of 3"
