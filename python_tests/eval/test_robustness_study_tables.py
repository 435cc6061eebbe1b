"""scripts/robustness_study.py's paired table: what DiffAug-Ensemble changes per seed, which the claims about
'DE helps under corruptions / for OOD detection' are read from."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import robustness_study  # noqa: E402


def ood(msp: float, de_msp: float, fpr: float, de_fpr: float) -> dict:
    return {"msp": {"auroc": msp, "fpr_at_95_tpr": fpr}, "de_msp": {"auroc": de_msp, "fpr_at_95_tpr": de_fpr},
            "energy": {"auroc": msp}, "de_energy": {"auroc": de_msp}}


def evaluation(clean: float, clean_de: float, mce: float, de_mce: float, digits: dict) -> dict:
    return {"clean_acc": clean, "clean_de_acc": clean_de, "mce": mce, "de_mce": de_mce,
            "corruptions": {"mean_acc": 0.5, "mean_de_acc": 0.52, "per_corruption": {}}, "ood": {"digits": digits}}


@pytest.fixture
def evals() -> dict:
    # baseline: DE lowers clean accuracy on every seed; DiffAug: DE raises it on seeds 0 and 2 only.
    off = [evaluation(0.90, 0.85 + 0.01 * s, 1.00, 1.05, ood(0.80, 0.90, 0.70, 0.40)) for s in range(3)]
    on = [evaluation(0.90, c, 0.90, m, ood(0.85, 0.88, 0.60, f))
          for c, m, f in ((0.91, 0.88, 0.50), (0.89, 0.92, 0.65), (0.92, 0.87, 0.55))]
    return {"off": off, "on": on}


def row(lines: list[str], name: str) -> list[str]:
    (line,) = [line for line in lines if line.startswith(f"| {name} |")]
    return [c.strip() for c in line.strip("|").split("|")][1:]


def test_gaps_are_paired_by_seed_with_their_mean(evals):
    lines, table = robustness_study.paired_gaps(evals, [0, 1, 2], ["baseline", "DiffAug"])
    gaps = table["clean accuracy"]["baseline: DE − plain"]
    assert gaps["per_seed"] == pytest.approx({0: -5.0, 1: -4.0, 2: -3.0})
    assert gaps["mean"] == pytest.approx(-4.0) and gaps["better"] == 0
    assert row(lines, "clean accuracy")[1] == "+1.0 / -1.0 / +2.0 (mean +0.7; better on 2 of 3)"
    # on + DE against off + DE: 91 − 85, 89 − 86, 92 − 87
    assert table["clean accuracy"]["DiffAug + DE − baseline + DE"]["per_seed"] == pytest.approx({0: 6.0, 1: 3.0, 2: 5.0})


def test_lower_is_better_for_mce_and_fpr(evals):
    _, table = robustness_study.paired_gaps(evals, [0, 1, 2], ["baseline", "DiffAug"])
    mce = table["mCE (relative to the same seed's plain baseline)"]
    assert mce["baseline: DE − plain"]["better"] == 0  # 100 -> 105 on every seed
    assert mce["DiffAug: DE − plain"]["better"] == 2  # 90 -> 88, 92, 87
    fpr = table["OOD digits FPR@95 (MSP)"]
    assert fpr["baseline: DE − plain"]["better"] == 3 and fpr["DiffAug: DE − plain"]["better"] == 2
    assert table["OOD digits AUROC (MSP)"]["DiffAug: DE − plain"]["better"] == 3


def test_rows_without_de_results_drop_out(evals):
    lines, table = robustness_study.paired_gaps(evals, [0, 1, 2], ["baseline", "DiffAug"])
    assert "OOD uniform AUROC (MSP)" not in table  # this set was not evaluated
    assert not any("worst corruption" in line for line in lines)  # a metric without a DE variant
    for e in evals["on"]:
        del e["clean_de_acc"]
    _, table = robustness_study.paired_gaps(evals, [0, 1, 2], ["baseline", "DiffAug"])
    assert "clean accuracy" not in table and "mean corruption accuracy" in table


def test_no_de_at_all_gives_no_table(evals):
    for mode in evals:
        for e in evals[mode]:
            for key in ("clean_de_acc", "de_mce", "ood"):
                del e[key]
            del e["corruptions"]["mean_de_acc"]
    assert robustness_study.paired_gaps(evals, [0, 1, 2], ["baseline", "DiffAug"]) == ([], {})


def test_rows_follow_the_evaluated_ood_sets_and_sigmas(evals):
    # a user's own OOD folder and a σ outside the defaults: both get rows, in the order they were evaluated
    for mode in evals:
        for i, e in enumerate(evals[mode]):
            e["ood"]["/data/kmnist"] = ood(0.6 + 0.01 * i, 0.7, 0.9, 0.8)
            e["certify"] = {"1.0": {"certified_acc": {"0.0": 0.5, "1.0": 0.2 + 0.1 * i}}}
    names = list(robustness_study.rows(evals))
    ood_rows = [n for n in names if n.startswith("OOD")]
    assert ood_rows[0] == "OOD digits AUROC (MSP)" and "OOD /data/kmnist AUROC (energy)" in ood_rows
    assert [n for n in names if n.startswith("certified")] == ["certified acc σ=1.0, r=0.0", "certified acc σ=1.0, r=1.0"]
    plain, de = robustness_study.rows(evals)["certified acc σ=1.0, r=1.0"]
    assert de is None and [plain(e) for e in evals["on"]] == pytest.approx([0.2, 0.3, 0.4])
    _, table = robustness_study.paired_gaps(evals, [0, 1, 2], ["baseline", "DiffAug"])
    assert table["OOD /data/kmnist AUROC (MSP)"]["baseline: DE − plain"]["per_seed"] == pytest.approx(
        {0: 10.0, 1: 9.0, 2: 8.0})
    assert not any(name.startswith("certified") for name in table)  # no DE variant of certification
