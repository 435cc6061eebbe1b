"""The robustness suite: corruptions are deterministic, in range and real; OOD metrics equal scikit-learn's;
randomized-smoothing certification is pinned on a linear classifier whose radius is known in closed form;
`diffaug-fast eval` runs every suite on a trained run, resumes, and reads CIFAR-10-C-style folders."""
import json
import signal
from dataclasses import dataclass
import subprocess
import sys
import time

import numpy as np
import pytest
import scipy.stats
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from diffaug_fast.data import eval_images, load_fashion_mnist
from diffaug_fast.eval.robustness.certify import (certified_accuracy, certify, clopper_pearson_lower, denoised_classifier,
                                             timestep_for_sigma)
from diffaug_fast.eval.robustness.corruptions import CORRUPTIONS, FAMILIES, corrupt
from diffaug_fast.eval.robustness.ood import detection_metrics, energy, ensemble_scores, msp, ood_images
from helpers import train_quick_classifier

CLI = [sys.executable, "-m", "diffaug_fast.cli"]


@pytest.fixture(scope="module")
def images():
    return load_fashion_mnist("test", limit=64)[0]


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corruptions_are_deterministic_in_range_and_grow_with_severity(images, name):
    outs = [corrupt(images, name, s, seed=3) for s in range(1, 6)]
    assert torch.equal(outs[2], corrupt(images, name, 3, seed=3))
    for out in outs:
        assert out.shape == images.shape and out.dtype == images.dtype
        assert out.min() >= -1 and out.max() <= 1 and torch.isfinite(out).all()
    change = [float((o - images).abs().mean()) for o in outs]
    assert change[0] > 0.02, change  # every severity really corrupts
    assert change[4] > change[0], change  # and the strongest corrupts more than the mildest
    if name.endswith("noise") or name in ("glass_blur", "elastic_transform", "frost", "fog", "snow"):
        assert not torch.equal(outs[2], corrupt(images, name, 3, seed=4))  # random ones depend on the seed


def test_corruption_families_cover_fifteen_and_bad_arguments_are_named(images):
    assert sorted(sum(FAMILIES.values(), ())) == sorted(CORRUPTIONS) and len(CORRUPTIONS) == 15
    with pytest.raises(ValueError, match="argument 'name'"):
        corrupt(images, "rain", 1)
    with pytest.raises(ValueError, match="argument 'severity'"):
        corrupt(images, "fog", 6)
    with pytest.raises(ValueError, match="argument 'images'"):
        corrupt(images[0], "fog", 1)
    rgb = corrupt(images.expand(-1, 3, -1, -1), "jpeg_compression", 2)
    assert rgb.shape == (64, 3, 28, 28)


def test_contrast_and_brightness_match_their_formulas(images):
    x01 = (images + 1) / 2
    mean = x01.mean((1, 2, 3), keepdim=True)
    torch.testing.assert_close(corrupt(images, "contrast", 1), ((x01 - mean) * 0.4 + mean).clamp(0, 1) * 2 - 1)
    torch.testing.assert_close(corrupt(images, "brightness", 3), (x01 + 0.3).clamp(0, 1) * 2 - 1)


@pytest.mark.parametrize("ties", [False, True])
def test_detection_metrics_equal_scikit_learn(ties):
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1.0, 700), rng.normal(0.0, 1.0, 400)
    if ties:
        a, b = np.round(a, 1), np.round(b, 1)
    m = detection_metrics(torch.from_numpy(a), b)
    y, s = np.r_[np.ones(700), np.zeros(400)], np.r_[a, b]
    fpr, tpr, _ = roc_curve(y, s)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert m["aupr"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert m["fpr_at_95_tpr"] == pytest.approx(fpr[np.searchsorted(tpr, 0.95)])
    perfect = detection_metrics([2.0, 3.0], [0.0, 1.0])
    assert perfect == {"auroc": 1.0, "aupr": 1.0, "fpr_at_95_tpr": 0.0}


def test_ood_scores_and_sets():
    logits = torch.tensor([[10.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert msp(logits)[0] > 0.99 and msp(logits)[1] == pytest.approx(1 / 3)
    torch.testing.assert_close(energy(logits), torch.logsumexp(logits, -1))
    per_t = torch.stack([logits, logits.flip(0)])
    de = ensemble_scores(per_t)
    torch.testing.assert_close(de["de_energy"], energy(logits).mean().expand(2))
    digits = ood_images("digits", n=100)
    assert digits.shape == (100, 1, 28, 28) and digits.min() == -1 and digits.max() <= 1
    assert torch.equal(ood_images("uniform", n=5, seed=1), ood_images("uniform", n=5, seed=1))


def test_clopper_pearson_equals_scipy_exact_interval():
    for k, n in ((90, 100), (7, 10), (100, 100), (51, 100)):
        two_sided = scipy.stats.binomtest(k, n).proportion_ci(confidence_level=0.998, method="exact").low
        assert clopper_pearson_lower(k, n, 0.001) == pytest.approx(two_sided, abs=1e-9)
    assert clopper_pearson_lower(0, 10, 0.01) == 0.0


def test_certify_recovers_the_closed_form_radius_of_a_linear_classifier():
    """Smoothing f(x) = [w·x + b > 0] with N(0, s²) gives p = Φ((w·x + b) / (s‖w‖)), so the exact certified
    radius is the distance to the boundary |w·x + b| / ‖w‖ (in the noise's units; reported halved, in [0, 1]
    pixel units). With many samples the Clopper–Pearson radius lies just below it."""
    w, b = torch.tensor([3.0, -4.0]), 0.5

    def classify(x):
        return ((x @ w + b) > 0).long()

    points = torch.tensor([[0.5, 0.0], [0.0, 0.3], [0.2, 0.1], [0.05, 0.0]])
    distance = (points @ w + b).abs() / w.norm() / 2
    preds, radii = certify(classify, points, sigma=0.25, num_classes=2, n0=200, n=200_000, alpha=0.001, batch=50_000)
    assert preds.tolist() == [1, 0, 1, 1]
    assert (radii <= distance + 1e-6).all() and (radii >= distance - 0.012).all(), (radii, distance)
    # On the boundary it must abstain.
    preds, radii = certify(classify, torch.tensor([[0.0, 0.125]]), sigma=0.25, num_classes=2, n=2000)
    assert preds.tolist() == [-1] and radii.tolist() == [0.0]
    assert certified_accuracy(torch.tensor([1, 0, -1]), torch.tensor([0.6, 0.3, 0.0]), torch.tensor([1, 1, 0]),
                              0.5) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="sigma > 0"):
        certify(classify, points, sigma=0.0, num_classes=2)


def test_certify_in_pieces_gives_the_answers_of_one_go():
    """Each image's noise is its own stream, so a certification split into pieces (as `eval` saves it) and
    resumed gives exactly the uninterrupted answers; the noise really is random (a point near the boundary)."""
    w = torch.tensor([3.0, -4.0])

    def classify(x):
        return ((x @ w + 0.5) > 0).long()

    points = torch.tensor([[0.05, 0.1], [0.0, 0.13], [0.2, 0.1], [0.1, 0.2], [0.02, 0.12]])
    whole = certify(classify, points, sigma=0.25, num_classes=2, n=300, seed=5)
    pieces = [certify(classify, points[i:i + 2], sigma=0.25, num_classes=2, n=300, seed=5, first_index=i)
              for i in range(0, 5, 2)]
    assert torch.equal(whole[0], torch.cat([p for p, _ in pieces]))
    assert torch.equal(whole[1], torch.cat([r for _, r in pieces]))
    assert not torch.equal(whole[1], certify(classify, points, sigma=0.25, num_classes=2, n=300, seed=6)[1])


def test_run_certify_saves_every_piece_and_resumes_from_them(tmp_path, monkeypatch):
    """An interrupted certification keeps its finished pieces in eval.partial.json; the rerun certifies only
    the rest and its numbers equal an uninterrupted run's."""
    from types import SimpleNamespace

    from diffaug_fast.eval.robustness import suite

    monkeypatch.setattr(suite, "CERTIFY_PIECE", 2)
    monkeypatch.setattr(suite, "denoised_classifier", lambda clf, den, sigma: _Counting(clf))
    config = SimpleNamespace(sigmas=(0.25,), certify_limit=5, n0=10, n=200, alpha=0.001, seed=1)
    images, labels = torch.tensor([[0.05, 0.1], [0.0, 0.13], [0.2, 0.1], [0.1, 0.2], [0.3, 0.12]]), torch.ones(5).long()
    linear = lambda x: ((x @ torch.tensor([3.0, -4.0]) + 0.5) > 0).long()  # noqa: E731
    partial = suite._Partial(tmp_path / "eval.partial.json", _Config())
    whole = suite.run_certify(linear, None, images, labels, config, partial, progress=False)
    assert sorted(k for k in partial.items if k.startswith("certify/0.25/")) == [
        "certify/0.25/images-from-0", "certify/0.25/images-from-2", "certify/0.25/images-from-4"]
    # as if stopped after two pieces: the last piece and the result are not there
    del partial.items["certify/0.25/images-from-4"], partial.items["certify/0.25"]
    partial.put("certify/0.25/images-from-0", partial.get("certify/0.25/images-from-0"))
    resumed_partial = suite._Partial(tmp_path / "eval.partial.json", _Config())
    calls = []
    monkeypatch.setattr(suite, "denoised_classifier", lambda clf, den, sigma: _Counting(clf, calls))
    resumed = suite.run_certify(linear, None, images, labels, config, resumed_partial, progress=False)
    assert resumed == whole and whole["0.25"]["images"] == 5
    assert sum(calls) == 10 + 200  # one image (the last piece) certified again, n0 + n samples


class _Counting:
    """The base classifier, counting the noisy samples it is asked about."""

    timestep = 0

    def __init__(self, classify, calls=None):
        self.classify, self.calls = classify, calls if calls is not None else []

    def __call__(self, x):
        self.calls.append(len(x))
        return self.classify(x)


@dataclass
class _Config:
    n: int = 200


@pytest.mark.slow  # the shipped denoiser on real images
def test_denoised_classifier_matches_noise_level_and_denoises():
    from diffaug_fast import pretrained

    den = pretrained("fmnist")
    t = timestep_for_sigma(den.schedule, 0.25)
    a, s = den.schedule.coefficients(torch.tensor([t]))
    assert abs(float(s / a) - 0.5) < 0.01
    x, y = load_fashion_mnist("test", limit=32)
    seen = []

    def record(x0_hat):
        seen.append(x0_hat)
        return torch.nn.functional.one_hot(y[:len(x0_hat)], 10).float()

    classify = denoised_classifier(record, den, 0.25)
    noisy = x + 0.5 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    assert torch.equal(classify(noisy), y)
    err_noisy, err_denoised = float((noisy - x).pow(2).mean()), float((seen[0] - x).pow(2).mean())
    assert err_denoised < 0.5 * err_noisy, (err_denoised, err_noisy)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    return train_quick_classifier(tmp_path_factory.mktemp("clean-run"))


@pytest.mark.slow  # trains a classifier, then two `diffaug-fast eval` subprocesses
def test_eval_command_runs_all_suites_and_resumes(trained_run, tmp_path):
    args = ["eval", str(trained_run), "--limit", "24", "--certify-limit", "3", "--n", "20", "--de-timesteps", "0,200",
            "--out", str(tmp_path / "ev")]
    out = subprocess.run(CLI + args, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "ev" / "eval.json").read_text())
    corr = result["corruptions"]
    assert set(corr["per_corruption"]) == set(CORRUPTIONS) and 0 <= corr["mean_acc"] <= 1 and "mean_de_acc" in corr
    assert set(result["ood"]) == {"digits", "uniform", "gaussian"}
    assert set(result["ood"]["digits"]) == {"msp", "energy", "de_msp", "de_energy"}
    assert set(result["certify"]) == {"0.25", "0.5"}
    # the plain keys a declared study reads: the worst corruption by its mean over severities, the sets in words
    assert corr["worst_mean_acc"] == min(corr["mean_acc_per_corruption"].values())
    assert result["ood_labels"]["digits"] == "scikit-learn 8x8 digits (upscaled)"
    assert "| scikit-learn 8x8 digits (upscaled) | msp |" in (tmp_path / "ev" / "eval.md").read_text()
    for name in ("eval.md", "acc_vs_severity.png", "certified_accuracy.png"):
        assert (tmp_path / "ev" / name).exists()
    # a second run with the same settings takes everything from eval.partial.json (the same numbers);
    # as the baseline of itself its mCE is exactly 100
    again = subprocess.run(CLI + args + ["--baseline", str(tmp_path / "ev")], capture_output=True, text=True,
                           timeout=900)
    assert again.returncode == 0, again.stderr
    second = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert second["corruptions"]["per_corruption"] == corr["per_corruption"]
    assert second["corruptions"]["mce"] == pytest.approx(1.0) and "mCE 100.0" in again.stdout


@pytest.mark.slow  # trains a classifier, then two `diffaug-fast eval` subprocesses
def test_sigterm_keeps_the_finished_items_and_the_rerun_uses_them(trained_run, tmp_path):
    """A scheduler's SIGTERM mid-evaluation: one line naming what was kept, exit 143, no traceback; the same
    command again finishes from there."""
    out = tmp_path / "ev"
    args = CLI + ["eval", str(trained_run), "--suite", "corruptions", "--limit", "64", "--de-timesteps", "0,200,400",
                  "--out", str(out)]
    partial = out / "eval.partial.json"
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and len(_items(partial)) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err
    kept = _items(partial)
    assert f"stopped by SIGTERM: {len(kept)} finished item(s) kept in {partial}; run the same command again" in err
    assert "Traceback" not in err and not (out / "eval.json").exists()
    assert 3 <= len(kept) < 1 + len(CORRUPTIONS) * 5  # stopped part-way through the corruption sets
    # mark one kept item: the rerun must take it from the file rather than compute it again
    key = next(k for k in kept if k.startswith("corruption/"))
    saved = json.loads(partial.read_text())
    saved["items"][key]["acc"] = 0.123
    partial.write_text(json.dumps(saved))
    again = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr
    per_set = json.loads((out / "eval.json").read_text())["corruptions"]["per_corruption"]
    assert set(per_set) == set(CORRUPTIONS)
    _, name, severity = key.split("/")
    assert per_set[name][severity]["acc"] == 0.123


def _items(partial) -> dict:
    try:
        return json.loads(partial.read_text())["items"]
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


@pytest.mark.slow  # trains a classifier, then a `diffaug-fast eval` subprocess
def test_eval_reads_a_cifar10c_style_folder(trained_run, tmp_path):
    data = tmp_path / "fmnist-c"
    data.mkdir()
    x, y = eval_images("fmnist", limit=20, image_size=28, channels=1)  # the 20 test images `eval --limit 20` sees
    pixels = ((x[:, 0] + 1) * 127.5).round().to(torch.uint8).numpy()[..., None]  # [N, 28, 28, 1] like CIFAR-10-C
    np.save(data / "labels.npy", np.tile(y.numpy(), 5))
    np.save(data / "identity.npy", np.tile(pixels, (5, 1, 1, 1)))
    out = subprocess.run(CLI + ["eval", str(trained_run), "--suite", "corruptions", "--no-de", "--limit", "20",
                                "--corruption-data", str(data), "--out", str(tmp_path / "ev")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert list(result["corruptions"]["per_corruption"]) == ["identity"]
    # the "identity corruption" is the clean test subset: every severity scores the clean accuracy
    assert all(r["acc"] == pytest.approx(result["clean_acc"])
               for r in result["corruptions"]["per_corruption"]["identity"].values())


@pytest.mark.slow  # trains a classifier, then two `diffaug-fast eval` subprocesses
def test_eval_with_another_denoiser_changes_only_the_ensemble(trained_run, tmp_path):
    def ood(folder, *more):
        out = subprocess.run(CLI + ["eval", str(trained_run), "--suite", "ood", "--ood", "uniform", "--limit", "16",
                                    "--de-timesteps", "0,600", *more, "--out", str(tmp_path / folder)],
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr
        return json.loads((tmp_path / folder / "eval.json").read_text())

    own, other = ood("own"), ood("other", "--denoiser", "fmnist-v")
    assert own["denoiser"] == "fmnist" and other["denoiser"] == "fmnist-v"
    assert own["clean_acc"] == other["clean_acc"] and own["ood"]["uniform"]["msp"] == other["ood"]["uniform"]["msp"]
    assert own["ood"]["uniform"]["de_msp"] != other["ood"]["uniform"]["de_msp"]


@pytest.mark.slow  # trains a classifier, then a `diffaug-fast eval` subprocess per case
@pytest.mark.parametrize("args, match", [
    (["--suite", "nope"], "--suite: unknown nope"),
    (["--limit", "0"], "argument --limit"),
    (["--corruption-data", "/nonexistent"], "--corruption-data: /nonexistent"),
    (["--baseline", "/nonexistent", "--suite", "corruptions", "--limit", "4", "--no-de"], "no eval.json there"),
])
def test_eval_errors_are_one_line(trained_run, tmp_path, args, match):
    out = subprocess.run(CLI + ["eval", str(trained_run), *args, "--out", str(tmp_path / "ev")], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 2 and match in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # trains a classifier
def test_an_emulated_ensemble_precision_is_warned_about(trained_run, tmp_path, monkeypatch, capsys):
    from diffaug_fast.cli import main
    from diffaug_fast.ops import backends

    monkeypatch.setattr(backends, "native_bf16", lambda device="cpu": (False, "pretend: no avx512_bf16 nor AMX"))
    args = ["eval", str(trained_run), "--suite", "ood", "--ood", "uniform", "--limit", "6", "--de-timesteps", "0"]
    assert main(args + ["--denoiser-precision", "bf16", "--out", str(tmp_path / "a")]) in (0, None)
    assert "warning: --denoiser-precision bf16 on cpu: pretend" in capsys.readouterr().err
    assert main(args + ["--denoiser-precision", "bf16", "--no-de", "--out", str(tmp_path / "b")]) in (0, None)
    assert "warning" not in capsys.readouterr().err  # no ensemble, no denoiser forward
