"""The official AugMix + DiffAug recipe (--augmix --jsd 12, --preset diffaugmix): the Jensen-Shannon term against
SciPy, the step's images (clean, two AugMix views, DiffAug copies of the un-augmented image), the loss, the
option checks, and a short run that resumes bit-exactly."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import entropy

from diffaug_fast.cli import main
from diffaug_fast.config import PRESETS, train_config
from diffaug_fast.runs.checkpoint import load_verified
from diffaug_fast.train.classifier import train_classifier
from diffaug_fast.train.losses import AUGMIX_JSD_WEIGHT, jensen_shannon
from helpers import fmnist_trainer, step_logits


def _trainer(**kw):
    return fmnist_trainer(seed=7, **kw)


@pytest.mark.parametrize("views, batch, classes", [(2, 5, 3), (3, 17, 10), (4, 1, 7)])
def test_jensen_shannon_is_scipys_mixture_entropy_minus_mean_entropy(views, batch, classes):
    gen = torch.Generator().manual_seed(views * batch)
    logits = [torch.randn(batch, classes, generator=gen, dtype=torch.float64) * 3 for _ in range(views)]
    got = jensen_shannon(*logits).numpy()
    p = [F.softmax(z, 1).numpy() for z in logits]
    m = np.mean(p, 0)
    want = entropy(m, axis=1) - np.mean([entropy(q, axis=1) for q in p], 0)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_jensen_shannon_is_zero_for_equal_views_and_has_the_right_gradient():
    z = torch.randn(6, 10, dtype=torch.float64)
    assert float(jensen_shannon(z, z.clone(), z.clone()).abs().max()) < 1e-12
    a, b, c = (torch.randn(4, 5, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(lambda *t: jensen_shannon(*t).sum(), (a, b, c))
    # float32 logits (a non-contiguous view) give float32 values close to the float64 ones
    wide = torch.randn(10, 8, dtype=torch.float64)
    got = jensen_shannon(wide.float()[:, ::2], (wide.float() * 2)[:, ::2])
    want = jensen_shannon(wide[:, ::2], wide[:, ::2] * 2)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        jensen_shannon(z)


def test_the_step_holds_clean_views_and_copies_of_the_unaugmented_image():
    jsd = _trainer(augmix=True, jsd=AUGMIX_JSD_WEIGHT, diffaug_fraction=0.25)
    plain = _trainer(diffaug_fraction=0.25)          # no AugMix: the same crops, timesteps and noise
    mixed = _trainer(augmix=True, diffaug_fraction=0.25)  # AugMix replacing the clean image, same seeds
    (x,), y = jsd.batches.supervised(1)
    (x_plain,), y_plain = plain.batches.supervised(1)
    (x_mixed,), _ = mixed.batches.supervised(1)
    assert x.shape[0] == 16 * 3 + 4 and torch.equal(y, torch.cat([y_plain[:16]] * 3 + [y_plain[16:]]))
    assert torch.equal(x[:16], x_plain[:16])                 # the clean image stays
    assert torch.equal(x[16:32], x_mixed[:16])               # view 1: the same AugMix as --augmix alone
    assert not torch.equal(x[16:32], x[32:48])               # view 2: its own seeds
    torch.testing.assert_close(x[48:], x_plain[16:], rtol=1e-5, atol=1e-5)  # copies of the un-augmented image


def test_loss_is_cross_entropy_plus_weighted_jensen_shannon():
    trainer = _trainer(augmix=True, jsd=AUGMIX_JSD_WEIGHT, diffaug_fraction=0.25)
    logits, y = step_logits(trainer, 0)
    ce = F.cross_entropy(logits, y, reduction="none")
    clean, views, copies = ce[:16], ce[16:48], ce[48:]
    weight = trainer.config.diffaug.weight  # the default preset's 1/4 per copy
    expected = (clean.sum() + weight * copies.sum()) / 16 + \
        AUGMIX_JSD_WEIGHT * jensen_shannon(*logits[:48].split(16)).mean()
    got = trainer.train_step()
    assert got["loss"] == pytest.approx(float(expected), rel=1e-5)
    assert got["loss"] != pytest.approx(float(expected + views.sum() / 16), rel=1e-3)  # the views get no CE


@pytest.mark.parametrize("args, needle", [
    (["--jsd", "12"], "argument --jsd 12.0 is AugMix's consistency term: add --augmix"),
    (["--augmix", "--jsd", "12", "--diffaug", "only"], "--diffaug only trains without the clean image"),
    (["--augmix", "--jsd", "12", "--mode", "noisy"], "argument --jsd is for clean classifiers"),
    (["--augmix", "--jsd", "-1"], "argument --jsd must be >= 0"),
])
def test_bad_jsd_options_are_one_line_errors(args, needle, capsys):
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_preset_diffaugmix_is_the_default_budget_with_the_official_term():
    config = train_config("diffaugmix")
    default = train_config("default")
    assert config.diffaug.augmix and config.diffaug.jsd == AUGMIX_JSD_WEIGHT == 12
    assert (config.optim.epochs, config.diffaug.fraction) == (default.optim.epochs, default.diffaug.fraction)
    assert set(PRESETS["diffaugmix"]) - set(PRESETS["default"]) == {"augmix", "jsd"}


@pytest.mark.slow  # a few real training steps with AugMix views, twice
def test_diffaugmix_run_resumes_bit_exactly(tmp_path):
    kw = dict(train_limit=96, batch_size=16, epochs=1, checkpoint_every=2, warmup_steps=2, compile="off",
              de_timesteps=[], eval_limit=16)
    config = train_config("diffaugmix", **kw)
    train_classifier(config, tmp_path / "a", progress=False, evaluate_at_end=False)
    train_classifier(config, tmp_path / "b", progress=False, stop_after=3, evaluate_at_end=False)
    train_classifier(config, tmp_path / "b", progress=False, evaluate_at_end=False)
    a, b = (load_verified(tmp_path / r / "checkpoint.pt") for r in "ab")
    assert a["step"] == b["step"] == 6
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
