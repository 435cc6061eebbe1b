"""FID / IS / KID plumbing with torch-fidelity and our classifier features: the same images give ~0, noise
gives a lot, torch-fidelity's FID equals our own and SciPy's Fréchet distance on the same features, our one-pass
extraction gives exactly what torch_fidelity.calculate_metrics gives, and `fidelity --bootstrap` sends each set
through the extractor once."""
import argparse
import json

import numpy as np
import pytest
import scipy.linalg
import torch

from diffaug_fast.data import load_fashion_mnist
from diffaug_fast.eval.fidelity import EXTRACTOR, features, fidelity_command, fidelity_metrics, register
from diffaug_fast.eval.fidelity_bootstrap import frechet_distance
from helpers import train_quick_classifier

pytestmark = pytest.mark.slow  # every test trains a feature extractor and runs torch-fidelity on real images


@pytest.fixture(scope="module")
def extractor_run(tmp_path_factory):
    return train_quick_classifier(tmp_path_factory.mktemp("extractor"), eval_limit=100)


@pytest.fixture(scope="module")
def test_images():
    return load_fashion_mnist("test", limit=600)[0]


def _scipy_fid(a, b):
    mu1, mu2 = a.mean(0), b.mean(0)
    c1, c2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(c1 @ c2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2 - 2 * root))


def test_fid_of_a_set_with_itself_is_zero_and_noise_is_far(extractor_run, test_images):
    same = fidelity_metrics(test_images, test_images, extractor_run, isc=False, kid=True)
    assert abs(same["frechet_inception_distance"]) < 1e-3 and abs(same["kernel_inception_distance_mean"]) < 1e-3
    noise = torch.rand_like(test_images) * 2 - 1
    far = fidelity_metrics(noise, test_images, extractor_run, isc=False, kid=False)
    halves = fidelity_metrics(test_images[:300], test_images[300:], extractor_run, isc=False, kid=False)
    assert far["frechet_inception_distance"] > 10 * halves["frechet_inception_distance"] > 0


def test_torch_fidelity_fid_equals_our_and_scipys_frechet_distance(extractor_run, test_images):
    a, b = test_images[:300], test_images[300:]
    fa, fb = features(a, extractor_run), features(b, extractor_run)
    ours = frechet_distance(fa.mean(0), np.cov(fa, rowvar=False), fb.mean(0), np.cov(fb, rowvar=False))
    theirs = fidelity_metrics(a, b, extractor_run, isc=False, kid=False)["frechet_inception_distance"]
    assert ours == pytest.approx(_scipy_fid(fa, fb), rel=1e-4, abs=1e-6)
    assert theirs == pytest.approx(ours, rel=1e-3, abs=1e-5)


def test_inception_score_uses_the_classifier_logits(extractor_run, test_images):
    isc = fidelity_metrics(test_images, test_images, extractor_run, fid=False, kid=False)
    assert 1.0 <= isc["inception_score_mean"] <= 10.0  # 10 classes bound the score
    blank = torch.full_like(test_images, -1.0)
    assert fidelity_metrics(blank, test_images, extractor_run, fid=False, kid=False)["inception_score_mean"] < 1.01


def test_one_pass_metrics_equal_torch_fidelity_calculate_metrics(extractor_run, test_images):
    import torch_fidelity

    from diffaug_fast.eval.fidelity import ImageTensorDataset

    generated, reference = test_images[:250].flip(-1), test_images[250:]
    ours = fidelity_metrics(generated, reference, extractor_run, kid_subset_size=200)
    theirs = torch_fidelity.calculate_metrics(
        input1=ImageTensorDataset(generated), input2=ImageTensorDataset(reference), cuda=False, isc=True, fid=True,
        kid=True, kid_subset_size=200, isc_splits=10, batch_size=500, feature_extractor=register(),
        feature_extractor_weights_path=str(extractor_run), save_cpu_ram=True, samples_shuffle=False, verbose=False)
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_fidelity_command_extracts_each_set_once(extractor_run, test_images, tmp_path, monkeypatch):
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    register()
    seen = []
    cls = FEATURE_EXTRACTORS_REGISTRY[EXTRACTOR]
    forward = cls.forward
    monkeypatch.setattr(cls, "forward", lambda self, x: seen.append(len(x)) or forward(self, x))
    generated = ((test_images[:120] + 1) * 127.5).round().to(torch.uint8)
    np.savez(tmp_path / "samples.npz", images=generated.numpy(), labels=np.zeros(120, dtype=np.int64))
    options = argparse.Namespace(samples=str(tmp_path / "samples.npz"), reference="fmnist", reference_limit=400,
                                 extractor=str(extractor_run), judge=None, bootstrap=50, json=str(tmp_path / "f.json"),
                                 device="cpu")
    result = fidelity_command(options)
    assert sum(seen) == 120 + 400  # the judge classifies through the classifier itself, not the extractor
    assert result["frechet_inception_distance_low"] <= result["frechet_inception_distance_high"]
    stored = json.loads((tmp_path / "f.json").read_text())
    assert stored["bootstrap_resamples"] == 50 and 0.0 <= stored["judge_accuracy"] <= 1.0
