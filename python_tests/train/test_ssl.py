"""Semi-supervised / PU building blocks against independent formulas (NumPy / SciPy), incl. gradients."""
import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch

from diffaug_fast.augment import partner_timesteps
from diffaug_fast.eval.metrics import f1_score
from diffaug_fast.train.ssl import (binary_score, labeled_subset, nnpu_risk, rampup,
                                    temporal_consistency)


def test_labeled_subset_is_balanced_deterministic_and_checked():
    labels = torch.arange(10).repeat(30)
    idx = labeled_subset(labels, 4, seed=0)
    assert torch.equal(labels[idx].bincount(), torch.full((10,), 4))
    assert torch.equal(idx, labeled_subset(labels, 4, seed=0)) and not torch.equal(idx, labeled_subset(labels, 4, 1))
    assert set(labels[labeled_subset(labels, 3, 0, classes=[2, 5])].tolist()) == {2, 5}
    with pytest.raises(ValueError, match="class 0 has only 30"):
        labeled_subset(labels, 31, 0)
    with pytest.raises(ValueError, match="labels_per_class"):
        labeled_subset(labels, 0, 0)


def test_partner_timesteps_stay_within_radius_and_range():
    gen = torch.Generator().manual_seed(0)
    t = torch.randint(0, 1000, (20000,), generator=gen)
    t2 = partner_timesteps(t, 30, 999, gen)
    assert (t2 - t).abs().max() <= 30 and t2.min() >= 0 and t2.max() <= 999
    inner = (t > 30) & (t < 969)  # away from the ends Δ is uniform on {-30..30}: chi-square against uniform
    counts = np.bincount((t2 - t)[inner].numpy() + 30, minlength=61)
    assert scipy.stats.chisquare(counts).pvalue > 1e-3
    assert torch.equal(partner_timesteps(t, 0, 999, gen), t)


def _kl(p_log, q_log):  # KL(p || q) per row, SciPy
    return scipy.special.rel_entr(np.exp(p_log), np.exp(q_log)).sum(-1)


@pytest.mark.parametrize("target", ["lower", "higher", "both"])
def test_temporal_consistency_matches_scipy_kl_and_detaches_the_target(target):
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(64, 10, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(64, 10, generator=gen, dtype=torch.float64, requires_grad=True)
    ta, tb = torch.randint(0, 1000, (64,), generator=gen), torch.randint(0, 1000, (64,), generator=gen)
    loss, mask = temporal_consistency(a, b, ta, tb, target=target)
    la = scipy.special.log_softmax(a.detach().numpy(), -1)
    lb = scipy.special.log_softmax(b.detach().numpy(), -1)
    if target == "both":
        expected = _kl(la, lb) + _kl(lb, la)
    else:
        a_first = (ta <= tb).numpy() if target == "lower" else (ta >= tb).numpy()
        expected = np.where(a_first, _kl(la, lb), _kl(lb, la))
    assert mask.all()
    np.testing.assert_allclose(loss.item(), expected.mean(), rtol=1e-10)
    loss.backward()
    if target != "both":  # the target side gets no gradient: rows where a is the target move only b
        a_first = torch.from_numpy(np.asarray(a_first))
        assert a.grad[a_first].abs().max() == 0 and b.grad[~a_first].abs().max() == 0
        assert b.grad[a_first].abs().max() > 0


def test_temporal_consistency_threshold_and_identical_predictions():
    logits = torch.randn(8, 5)
    t = torch.arange(8)
    loss, _ = temporal_consistency(logits, logits.clone(), t, t + 1)
    assert loss.abs().item() < 1e-6
    sharp = torch.zeros(4, 3)
    sharp[:2, 0] = 10.0  # two confident rows, two uniform ones
    other = torch.randn(4, 3)
    loss, mask = temporal_consistency(sharp, other, torch.zeros(4), torch.ones(4), threshold=0.9)
    assert mask.tolist() == [True, True, False, False]
    full, _ = temporal_consistency(sharp[:2], other[:2], torch.zeros(2), torch.ones(2))
    torch.testing.assert_close(loss, full / 2)
    with pytest.raises(ValueError, match="tc_target"):
        temporal_consistency(sharp, other, t[:4], t[:4], target="middle")


def test_rampup():
    assert rampup(0, 100) == pytest.approx(np.exp(-5)) and rampup(100, 100) == 1.0 and rampup(5, 0) == 1.0
    values = [rampup(s, 100) for s in range(101)]
    assert all(x < y for x, y in zip(values, values[1:]))


def _nnpu_numpy(sp, su, prior, loss):
    margin = (lambda z: np.logaddexp(0.0, z)) if loss == "logistic" else scipy.special.expit
    r_pos, r_pos_neg, r_unl_neg = margin(-sp).mean(), margin(sp).mean(), margin(su).mean()
    neg = r_unl_neg - prior * r_pos_neg
    return prior * r_pos + max(neg, 0.0), neg


@pytest.mark.parametrize("loss", ["logistic", "sigmoid"])
@pytest.mark.parametrize("shift", [0.0, 4.0])  # 4: unlabeled scored far below positives -> negative risk < 0
def test_nnpu_risk_and_its_correction_step(shift, loss):
    gen = torch.Generator().manual_seed(2)
    sp = torch.randn(30, generator=gen, dtype=torch.float64).add(1.0).requires_grad_(True)
    su = torch.randn(90, generator=gen, dtype=torch.float64).sub(shift).requires_grad_(True)
    prior = 0.4
    objective, risk = nnpu_risk(sp, su, prior, loss=loss)
    expected_risk, neg = _nnpu_numpy(sp.detach().numpy(), su.detach().numpy(), prior, loss)
    np.testing.assert_allclose(risk.item(), expected_risk, rtol=1e-10)
    objective.backward()
    sig = torch.sigmoid
    d_margin = sig(su) if loss == "logistic" else sig(su) * (1 - sig(su))  # d/dz of margin(z)
    if neg >= 0:  # the plain unbiased PU risk: d/d su = margin'(su) / n_u
        np.testing.assert_allclose(objective.item(), expected_risk, rtol=1e-10)
        torch.testing.assert_close(su.grad, d_margin / len(su))
    else:  # the correction ascends the negative risk: gradient −margin'(su) / n_u, unlabeled scores pushed up
        assert shift > 0
        torch.testing.assert_close(su.grad, -d_margin / len(su))
        assert (su.grad < 0).all()


def test_pu_helpers_check_their_input():
    with pytest.raises(ValueError, match="prior"):
        nnpu_risk(torch.zeros(2), torch.zeros(2), 1.0)
    with pytest.raises(ValueError, match="argument 'loss'"):
        nnpu_risk(torch.zeros(2), torch.zeros(2), 0.3, loss="hinge")
    with pytest.raises(ValueError, match="at least one labeled positive"):
        nnpu_risk(torch.zeros(0), torch.zeros(2), 0.3)
    with pytest.raises(ValueError, match="2 outputs"):
        binary_score(torch.zeros(3, 10))
    assert binary_score(torch.tensor([[1.0, 3.0]])).item() == 2.0
    pred, target = torch.tensor([1, 1, 0, 0, 1]), torch.tensor([1, 0, 0, 1, 1])
    assert f1_score(pred, target) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))


# --------------------------------------------------------------------------------------------------------------
# The trainer in --ssl / --pu mode, on real Fashion-MNIST.

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from diffaug_fast.runs.checkpoint import load_verified  # noqa: E402
from diffaug_fast.config import train_config
from diffaug_fast.train.classifier import train_classifier  # noqa: E402

CLI = [sys.executable, "-m", "diffaug_fast.cli"]


def _ssl_config(**kw):
    base = dict(mode="noisy", ssl=True, labels_per_class=20, train_limit=4096, batch_size=64, epochs=2,
                eval_limit=500, compile="off", tc_weight=5.0, tc_rampup=20, warmup_steps=5)
    return train_config("quick", **{**base, **kw})


@pytest.mark.slow  # trains two semi-supervised classifiers on real Fashion-MNIST
def test_consistency_term_lowers_disagreement_between_t_and_t_prime(tmp_path):
    """Same labeled images, same steps: with the temporal-consistency term the classifier changes its top class
    between x_t and x_t' (same image, same ε, |t − t'| ≤ 50) far less often on real test images."""
    off = train_classifier(_ssl_config(consistency=False), tmp_path / "off", progress=False)
    on = train_classifier(_ssl_config(consistency=True), tmp_path / "on", progress=False)
    assert off["labeled_examples"] == on["labeled_examples"] == 200
    d_off, d_on = off["tc_disagreement"], on["tc_disagreement"]
    assert d_on["symmetric_kl"] < 0.5 * d_off["symmetric_kl"], (d_on, d_off)
    assert d_on["top_class_changed"] < d_off["top_class_changed"], (d_on, d_off)
    assert on["mean_acc_over_t"] > 0.15  # it still learned the classes (chance: 0.10)
    log = [json.loads(line) for line in (tmp_path / "on" / "metrics.jsonl").read_text().splitlines()]
    assert all("tc_kl" in row for row in log) and "tc_kl" not in json.dumps(off)


@pytest.mark.slow  # three training runs
def test_ssl_resume_is_bit_exact(tmp_path):
    config = _ssl_config(mode="da", train_limit=256, batch_size=32, epochs=1, eval_limit=20, checkpoint_every=2,
                         tc_noise="fresh", tc_target="both", labels_per_class=3)
    train_classifier(config, tmp_path / "a", progress=False, evaluate_at_end=False)
    train_classifier(config, tmp_path / "b", progress=False, stop_after=3, evaluate_at_end=False)
    train_classifier(config, tmp_path / "b", progress=False, evaluate_at_end=False)
    a, b = load_verified(tmp_path / "a" / "checkpoint.pt"), load_verified(tmp_path / "b" / "checkpoint.pt")
    assert a["step"] == b["step"] == 8
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


@pytest.mark.slow  # a `diffaug-fast train --pu` subprocess on real Fashion-MNIST
def test_pu_command_trains_a_binary_classifier_and_reports_f1(tmp_path):
    # --val-size 0: the first 4096 training images as before the split; with the split's images this 2-epoch, 60-label
    # budget collapsed to all-negative (accuracy 0.70, F1 0 on every bucket) — the nnPU recipe is fragile this small
    out = subprocess.run(CLI + ["train", "--mode", "noisy", "--pu", "--positive", "0,2,4", "--labels-per-class", "20",
                                "--val-size", "0", "--train-limit", "4096", "--batch-size", "64", "--epochs", "2", "--eval-limit", "500",
                                "--compile", "off", "--out", str(tmp_path / "pu")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    metrics = json.loads((tmp_path / "pu" / "metrics.json").read_text())
    assert metrics["labeled_examples"] == 60 and abs(metrics["prior"] - 0.3) < 0.03  # 3 of 10 balanced classes
    assert "mean F1" in out.stdout and 0 <= metrics["mean_f1_over_t"] <= 1
    low_t = metrics["acc_per_t_bucket"][0]
    assert low_t["acc"] > 0.75 and low_t["f1"] > 0.5, low_t  # all-negative would score 0.70 and F1 0
    classes = json.loads((tmp_path / "pu" / "classes.json").read_text())
    assert classes[1] == "positive (T-shirt/top, Pullover, Coat)"


@pytest.mark.slow  # a `diffaug-fast train` subprocess per case
@pytest.mark.parametrize("args, match", [
    (["--ssl"], "add --mode noisy or --mode da"),
    (["--mode", "noisy", "--ssl", "--pu", "--positive", "1"], "choose one of --ssl"),
    (["--mode", "noisy", "--pu"], "--pu needs --positive"),
    (["--mode", "noisy", "--pu", "--positive", "1", "--prior", "1.5"], "argument --prior must be in (0, 1) or 'true', got 1.5"),
    (["--mode", "noisy", "--pu", "--positive", "12", "--train-limit", "256"], "--positive [12]"),
    (["--mode", "da", "--ssl", "--tc-radius", "-1"], "argument --tc-radius must be >= 0, got -1"),
    (["--mode", "da", "--ssl", "--labels-per-class", "0"], "argument --labels-per-class must be > 0, got 0"),
    (["--mode", "noisy", "--ssl", "--labels-per-class", "500", "--train-limit", "300"], "class 0 has only"),
])
def test_ssl_and_pu_errors_are_one_line(tmp_path, args, match):
    out = subprocess.run(CLI + ["train", *args, "--compile", "off", "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 2, out.stdout
    assert match in out.stderr and "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
