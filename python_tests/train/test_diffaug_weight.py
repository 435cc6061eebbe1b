"""--diffaug-weight W: each DiffAug copy's cross-entropy counts W times a clean image's. W = 1 is the paper's
CE(clean) + CE(DiffAug) (and, with a copy of every image, the loss exactly as before); the baseline, `only` and
noisy / DA classifiers ignore it."""
import pytest
import torch
import torch.nn.functional as F

from diffaug_fast.cli import main
from diffaug_fast.train.losses import clean_classifier_loss
from helpers import fmnist_trainer, step_logits


def _trainer(**kw):
    return fmnist_trainer(seed=7, **kw)


@pytest.mark.parametrize("fraction, copies", [(0.25, 4), (1.0, 16)])
@pytest.mark.parametrize("weight", [0.5, 0.2])
def test_a_step_weighs_the_copies(fraction, copies, weight):
    trainer = _trainer(diffaug_fraction=fraction, diffaug_weight=weight)
    logits, y = step_logits(trainer, 0)
    assert len(y) == 16 + copies
    per_image = F.cross_entropy(logits, y, reduction="none")
    expected = (per_image[:16].sum() + weight * per_image[16:].sum()) / 16
    got = trainer.train_step()
    assert got["loss"] == pytest.approx(float(expected), rel=1e-5)
    unweighted = (per_image[:16].sum() + per_image[16:].sum()) / 16
    assert got["loss"] != pytest.approx(float(unweighted), rel=1e-3)


def test_weight_one_is_the_loss_as_before():
    """With a copy of every image W = 1 takes the old path: the batch mean x 2, bit for bit."""
    logits, y = torch.randn(32, 10), torch.randint(0, 10, (32,))
    got = clean_classifier_loss(logits, y, clean=16, batch=16, world=1, copies_share=False, copy_weight=1.0)
    assert torch.equal(got, F.cross_entropy(logits, y, reduction="none").mean() * 2)


def test_the_gradient_of_a_copy_scales_with_the_weight():
    logits = torch.randn(20, 10, requires_grad=True)
    y = torch.randint(0, 10, (20,))
    grads = []
    for weight in (1.0, 0.25):
        logits.grad = None
        clean_classifier_loss(logits, y, clean=16, batch=16, world=1, copies_share=True, copy_weight=weight).backward()
        grads.append(logits.grad.clone())
    torch.testing.assert_close(grads[1][:16], grads[0][:16], rtol=0, atol=0)  # the clean images: untouched
    torch.testing.assert_close(grads[1][16:], 0.25 * grads[0][16:])


def test_two_ranks_add_up_to_one_rank():
    """Each rank's loss, averaged over 2 ranks, is the one-rank loss of the global batch (DDP averages gradients)."""
    logits, y = torch.randn(40, 10), torch.randint(0, 10, (40,))
    clean, copies = torch.arange(32), torch.arange(32, 40)
    one = clean_classifier_loss(logits, y, clean=32, batch=32, world=1, copies_share=True, copy_weight=0.5)
    halves = []
    for rank in (0, 1):  # rank 0: clean 0..15 and all 8 copies; rank 1: clean 16..31, no copies
        index = torch.cat([clean[16 * rank:16 * (rank + 1)], copies if rank == 0 else copies[:0]])
        halves.append(clean_classifier_loss(logits[index], y[index], clean=16, batch=32, world=2,
                                            copies_share=True, copy_weight=0.5))
    torch.testing.assert_close((halves[0] + halves[1]) / 2, one)


@pytest.mark.parametrize("options", [{"diffaug": "off"}, {"diffaug": "only"}])
def test_other_modes_ignore_it(options):
    weighted, plain = _trainer(diffaug_weight=0.5, **options), _trainer(**options)
    assert weighted.train_step()["loss"] == plain.train_step()["loss"]


def test_bad_weight_is_a_one_line_error(capsys):
    assert main(["train", "--diffaug-weight", "0"]) == 2
    err = capsys.readouterr().err
    assert "--diffaug-weight" in err and "Traceback" not in err

