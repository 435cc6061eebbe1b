"""--diffaug-until U: DiffAug copies for the first round(U x total steps) steps, the clean images alone after them.
The steps with copies are those of a U = 1 run (same images, timesteps, keyed noise); the clean steps are the
same clean images with the plain cross-entropy mean; the baseline and noisy / DA classifiers ignore the option."""
import pytest
import torch
import torch.nn.functional as F

from diffaug_fast.cli import main
from diffaug_fast.config import train_config
from diffaug_fast.train.batches import diffaug_steps
from helpers import fmnist_trainer, step_logits


def _trainer(**kw):
    return fmnist_trainer(seed=3, **kw)  # 256 images, batch 16, 4 epochs of the default preset: 64 steps


def test_steps_with_copies_round_the_share_of_the_run():
    assert diffaug_steps(train_config("default", diffaug_until=0.75), 64) == 48
    assert diffaug_steps(train_config("default", diffaug_until=0.5), 7) == 4  # round(3.5): banker's rounding
    assert diffaug_steps(train_config("default"), 64) == 64
    for options in ({"diffaug": "off"}, {"diffaug": "only"}, {"mode": "noisy"}):  # not for them: every step as before
        assert diffaug_steps(train_config("default", diffaug_until=0.25, **options), 64) == 64


@pytest.mark.parametrize("fraction", [0.25, 1.0])
def test_copies_stop_at_the_boundary_and_the_rest_is_the_same(fraction):
    until, full = _trainer(diffaug_fraction=fraction, diffaug_until=0.75), _trainer(diffaug_fraction=fraction)
    assert until.total_steps == 64 and until.batches.diffaug_steps == 48
    copies = until.batches.diffaug_images
    for step in (0, 47):  # the last step with copies: identical to the run without --diffaug-until
        (x_until,), y_until = until.batches.supervised(step)
        (x_full,), y_full = full.batches.supervised(step)
        assert x_until.shape[0] == 16 + copies
        assert torch.equal(x_until, x_full) and torch.equal(y_until, y_full)
    for step in (48, 63):  # after it: the same clean images, no copies
        (x_until,), y_until = until.batches.supervised(step)
        (x_full,), y_full = full.batches.supervised(step)
        assert x_until.shape[0] == 16
        assert torch.equal(x_until, x_full[:16]) and torch.equal(y_until, y_full[:16])


@pytest.mark.parametrize("fraction", [0.25, 1.0])
def test_a_clean_step_is_the_plain_cross_entropy_mean(fraction):
    trainer = _trainer(diffaug_fraction=fraction, diffaug_until=0.5)
    trainer.step = 40  # past the 32 steps with copies
    logits, y = step_logits(trainer, 40)
    assert len(y) == 16
    got = trainer.train_step()
    assert got["loss"] == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-5)
    assert "acc_diffaug" not in got  # nothing to report on a step without copies


def test_baseline_ignores_it():
    """The default preset may set the option: `--diffaug off` must stay the baseline, step for step."""
    off_until, off = _trainer(diffaug="off", diffaug_until=0.25), _trainer(diffaug="off")
    for step in (0, 40):
        (a,), ya = off_until.batches.supervised(step)
        (b,), yb = off.batches.supervised(step)
        assert torch.equal(a, b) and torch.equal(ya, yb)


@pytest.mark.parametrize("value", ["0", "1.5"])
def test_bad_values_are_one_line_errors(value, capsys):
    assert main(["train", "--diffaug-until", value]) == 2
    err = capsys.readouterr().err
    assert f"argument --diffaug-until must be in (0, 1], got {float(value)}" in err and "Traceback" not in err


def test_the_report_states_it():
    from diffaug_fast.train.report import _share

    on = {"diffaug": "on", "diffaug_fraction": 0.125, "diffaug_until": 0.75}
    assert _share(on) == ", DiffAug copies of 0.125 of each batch, DiffAug for the first 75% of the steps " \
                         "(clean images alone after)"
    assert _share({**on, "diffaug_until": 1.0}) == ", DiffAug copies of 0.125 of each batch"
    assert _share({**on, "diffaug": "off"}) == ""


def test_images_per_second_counts_copies_only_where_there_are_some():
    from diffaug_fast.train.classifier import images_per_step

    count = images_per_step(_trainer(diffaug_fraction=0.25, diffaug_until=0.5))  # 32 of 64 steps with 4 copies
    assert [count(s) for s in (0, 31, 32, 63)] == [20, 20, 16, 16]
    assert images_per_step(_trainer(diffaug="off"))(0) == 16
