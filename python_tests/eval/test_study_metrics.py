"""The numbers a declared study (experiments/*.toml) reads are plain keys of the JSON the commands write. What the
old study drivers computed from those files — the worst corruption, the x̂0 MSE over t ranges, gradient alignment
per classifier — is now computed where the file is written; these test that."""
import json

import pytest
import torch

from diffaug_fast.eval.denoiser_report import x0_mse_summary
from diffaug_fast.eval.gradients import alignment_summary
from diffaug_fast.eval.robustness.ood import OOD_LABELS, ood_label
from diffaug_fast.eval.robustness.report import write_eval_report
from diffaug_fast.eval.robustness.suite import corruption_summary


def test_corruption_summary_names_the_worst_corruption_by_its_mean_over_severities():
    # "fog" has the lowest single cell (0.05) but "blur" the lowest mean over its five severities (0.2 vs 0.25)
    def sev(acc, de):
        return {str(s): {"acc": a, "de_acc": d} for s, a, d in zip(range(1, 6), acc, de)}

    table = {"fog": sev([0.45, 0.05, 0.25, 0.25, 0.25], [0.5, 0.3, 0.4, 0.4, 0.4]),
             "blur": sev([0.2] * 5, [0.6, 0.1, 0.35, 0.35, 0.35]),
             "noise": sev([0.8] * 5, [0.85] * 5)}
    summary = corruption_summary(table)
    assert summary["per_corruption"] is table
    assert summary["mean_acc_per_corruption"] == pytest.approx({"fog": 0.25, "blur": 0.2, "noise": 0.8})
    assert summary["worst_acc_corruption"] == "blur" and summary["worst_mean_acc"] == pytest.approx(0.2)
    assert summary["mean_acc"] == pytest.approx((0.25 + 0.2 + 0.8) / 3)
    assert summary["acc_per_severity"][1] == pytest.approx((0.05 + 0.2 + 0.8) / 3)
    # DiffAug-Ensemble's worst is found on its own means (fog 0.4, blur 0.35)
    assert summary["worst_de_acc_corruption"] == "blur" and summary["worst_mean_de_acc"] == pytest.approx(0.35)
    json.dumps(summary)  # eval.json material


def test_corruption_summary_without_the_ensemble_has_no_de_keys():
    table = {name: {str(s): {"acc": 0.1 * s} for s in range(1, 6)} for name in ("a", "b")}
    summary = corruption_summary(table)
    assert summary["acc_per_severity"] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert not any("de_acc" in key for key in summary)


def test_the_digits_set_is_named_for_what_it_is(tmp_path):
    """`digits` is scikit-learn's 8x8 digits upscaled, not MNIST: the report says so; a folder keeps its name."""
    assert ood_label("digits") == OOD_LABELS["digits"] == "scikit-learn 8x8 digits (upscaled)"
    assert ood_label("uniform") == "uniform noise" and ood_label("kmnist") == "kmnist"
    metrics = {"auroc": 0.9, "aupr": 0.8, "fpr_at_95_tpr": 0.3}
    result = {"run": "r", "images": 10, "clean_acc": 0.9,
              "ood": {"digits": {"msp": metrics}, "kmnist": {"msp": metrics}}}
    text = write_eval_report(result, tmp_path).read_text()
    assert "| scikit-learn 8x8 digits (upscaled) | msp | 90.0 |" in text and "| kmnist | msp |" in text
    assert "| digits |" not in text


def test_x0_mse_summary_means_over_t_ranges_and_the_precision_gate():
    rows = [{"t_from": 100 * k, "t_to": 100 * k + 99, "x0_mse": 0.1 * (k + 1), "ratio_bf16": 1 + 0.001 * k}
            for k in range(10)]
    summary = x0_mse_summary(rows, mean_image_mse=0.55, precision="fp32", others=["bf16"])
    assert summary["x0_mse_mean"] == pytest.approx(0.55)
    assert summary["x0_mse_t_below_500"] == pytest.approx((0.1 + 0.2 + 0.3 + 0.4 + 0.5) / 5)
    assert summary["x0_mse_t600_up"] == pytest.approx((0.7 + 0.8 + 0.9 + 1.0) / 4)
    assert summary["buckets_worse_than_mean_image"] == 5  # 0.6 ... 1.0
    assert summary["worst_relative_change"] == {"bf16": pytest.approx(0.009)}
    assert x0_mse_summary(rows, 0.55)["worst_relative_change"] == {}


def test_alignment_summary_keeps_the_classifier_order_under_stable_keys():
    cos = {"seed0 (noisy)": {100: torch.tensor([0.1, 0.3]), 500: torch.tensor([0.2, 0.2])},
           "seed0 (da)": {100: torch.tensor([0.0, 0.4]), 500: torch.tensor([0.5, 0.3])}}
    runs = {"seed0 (noisy)": ("runs/noisy/seed0", "noisy"), "seed0 (da)": ("runs/da/seed0", "da")}
    summary = alignment_summary({"cosine": cos}, runs, images=2, seed=0)
    assert [c["mode"] for c in summary["classifiers"]] == ["noisy", "da"]
    assert summary["classifiers"][1]["cosine"] == pytest.approx({"100": 0.2, "500": 0.4})  # classifiers.1.cosine.500
    assert summary["classifiers"][0]["run"] == "runs/noisy/seed0" and summary["images"] == 2
    json.dumps(summary)


@pytest.mark.slow  # trains a classifier, then a `diffaug-fast eval` subprocess
def test_a_baseline_that_is_the_evaluation_itself_gives_mce_100(tmp_path):
    """A study gives every variant `--baseline {run:baseline}/corruptions`: the baseline's own evaluation then names
    its own --out, which has no eval.json yet; it is its own reference."""
    import subprocess
    import sys

    from helpers import train_quick_classifier

    run = train_quick_classifier(tmp_path / "run")
    out = tmp_path / "run" / "corruptions"
    cli = [sys.executable, "-m", "diffaug_fast.cli"]
    args = ["eval", str(run), "--suite", "corruptions", "--limit", "16", "--no-de", "--out", str(out), "--baseline",
            str(out)]
    done = subprocess.run(cli + args, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    corr = json.loads((out / "eval.json").read_text())["corruptions"]
    assert corr["mce"] == pytest.approx(1.0) and corr["baseline"] == str(out)
