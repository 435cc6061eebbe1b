"""--diffaug-fraction: only the first round(F x batch) images of each global batch get a DiffAug copy. The copies
are the ones a fraction-1 run makes of those images (same timesteps, same keyed noise), ranks' shards add up to the
global batch, and every image weighs 1 / batch in the loss, as in the paper's CE(clean) + CE(DiffAug) at F = 1."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from diffaug_fast.cli import main
from diffaug_fast.train.batches import Batches, diffaug_count
from helpers import fmnist_trainer, step_logits


def _trainer(**kw):
    return fmnist_trainer(seed=5, **kw)


def test_count_rounds_and_keeps_at_least_one():
    assert [diffaug_count(128, f) for f in (1.0, 0.25, 0.5, 0.001)] == [128, 32, 64, 1]
    assert diffaug_count(10, 0.25) == 2  # round(2.5) = 2: banker's rounding, stated as round()


@pytest.mark.parametrize("args, needle", [
    (["--diffaug-fraction", "0"], "argument --diffaug-fraction must be in (0, 1], got 0.0"),
    (["--diffaug-fraction", "1.5"], "argument --diffaug-fraction must be in (0, 1], got 1.5"),
])
def test_bad_fractions_are_one_line_errors(args, needle, capsys):
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


@pytest.mark.parametrize("mode", ["off", "only"])
def test_other_diffaug_modes_ignore_the_share(mode):
    """The default preset's share must not stop `--diffaug off` (the baseline) or `only` from running as before."""
    shared, full = _trainer(diffaug=mode, diffaug_fraction=0.125), _trainer(diffaug=mode,
                                                                                     diffaug_fraction=1.0)
    (x_shared,), y_shared = shared.batches.supervised(1)
    (x_full,), y_full = full.batches.supervised(1)
    assert x_shared.shape[0] == 16 and torch.equal(x_shared, x_full) and torch.equal(y_shared, y_full)


def test_the_copies_are_those_of_a_full_diffaug_run():
    full, part = _trainer(diffaug_fraction=1.0), _trainer(diffaug_fraction=0.25)
    assert part.batches.diffaug_images == 4
    for step in (0, 3):
        (x_full,), y_full = full.batches.supervised(step)
        (x_part,), y_part = part.batches.supervised(step)
        assert x_full.shape[0] == 32 and x_part.shape[0] == 20
        torch.testing.assert_close(x_part[:16], x_full[:16], rtol=0, atol=0)  # the clean images
        # the same four DiffAug images (the denoiser runs on 4 instead of 16: float rounding only, which AVX-512
        # kernels blocked by batch size put at ~2e-5)
        torch.testing.assert_close(x_part[16:], x_full[16:20], rtol=1e-4, atol=1e-4)
        assert torch.equal(y_part, torch.cat([y_full[:16], y_full[:4]]))


@pytest.mark.parametrize("fraction", [0.25, 0.75])
def test_two_ranks_shards_make_the_global_batch(fraction):
    one = _trainer(diffaug_fraction=fraction)
    (x_one,), y_one = one.batches.supervised(2)
    k = one.batches.diffaug_images
    clean, copies, labels = [], [], []
    for rank in (0, 1):
        spec = dataclasses.replace(one.batches.spec, rank=rank, world=2)
        shard = Batches(one.config, one.batches.source, spec, denoiser=one.denoiser, fast_net=None, device=torch.device("cpu"),
                        total_steps=one.total_steps)
        (x,), y = shard.supervised(2)
        clean.append(x[:8])
        copies.append(x[8:])
        labels.append((y[:8], y[8:]))
    assert [len(c) for c in copies] == [min(k, 8), k - min(k, 8)]  # rank 0 holds the first 8 of the global batch
    torch.testing.assert_close(torch.cat(clean), x_one[:16], rtol=0, atol=0)
    torch.testing.assert_close(torch.cat(copies), x_one[16:], rtol=1e-4, atol=1e-4)
    assert torch.equal(torch.cat([labels[0][0], labels[1][0], labels[0][1], labels[1][1]]), y_one)


def test_loss_is_clean_mean_plus_diffaug_mean():
    trainer = _trainer(diffaug_fraction=0.25, diffaug_weight=1.0)  # the paper's weighting (the default preset: 1/4)
    logits, y = step_logits(trainer, 0)
    per_image = F.cross_entropy(logits, y, reduction="none")
    expected = (per_image[:16].sum() + per_image[16:].sum()) / 16  # CE(clean) + 4/16 of CE(copies)
    got = trainer.train_step()
    assert got["loss"] == pytest.approx(float(expected), rel=1e-5)
    # not a mean over the copies: that would give each copy 4x a clean image's weight
    mean_of_halves = F.cross_entropy(logits[:16], y[:16]) + F.cross_entropy(logits[16:], y[16:])
    assert got["loss"] != pytest.approx(float(mean_of_halves), rel=1e-3)
    assert set(got) >= {"acc_clean", "acc_diffaug"}
