"""The one training loop and the one EMA: the EMA equals the hand-written average it replaced, and the loop's
log, cadence and resume work for any trainer with the loop's small interface."""
import json
import math

import torch

from diffaug_fast.runs.checkpoint import load_verified
from diffaug_fast.train import loop
from diffaug_fast.train.optim import EMA, ema_start_warning, lr_factor


def test_ema_equals_lerp_from_the_initial_weights():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    manual = {k: v.clone() for k, v in model.state_dict().items()}
    ema = EMA(model, 0.9)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(5):
        model(torch.randn(8, 4)).square().mean().backward()
        opt.step()
        opt.zero_grad()
        ema.update(model)
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                manual[k].lerp_(v, 0.1)
    for k, v in ema.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, manual[k], rtol=0, atol=1e-7)


def test_lr_factor_warms_up_then_follows_the_schedule():
    f = lr_factor("cosine", 10, 100)
    assert f(0) == 0.1 and abs(f(9) - 0.5 * (1 + math.cos(math.pi * 0.09))) < 1e-12 and f(100) == 0.0
    g = lr_factor("step", 0, 100)
    assert g(49) == 1.0 and abs(g(50) - 0.1) < 1e-12 and abs(g(75) - 0.01) < 1e-12


class _Counter:
    """The smallest trainer: a number that grows by one per step."""

    def __init__(self, total):
        self.step, self.total_steps, self.value = 0, total, 0.0

    def train_step(self):
        self.value += 1
        return {"loss": 1.0 / (1 + self.value)}

    def state_dict(self):
        return {"step": self.step, "value": self.value}

    def load_state_dict(self, state):
        self.step, self.value = state["step"], state["value"]

    def log_fields(self):
        return {"epoch": self.step / 4}


def test_loop_logs_checkpoints_and_resumes(tmp_path):
    a = _Counter(10)
    assert loop.run(a, tmp_path, desc="t", images_per_step=2, log_every=3, checkpoint_every=4, progress=False,
                    stop_after=6) == 6
    assert load_verified(tmp_path / "checkpoint.pt")["step"] == 6  # the last step of the call is saved
    b = _Counter(10)
    assert loop.resume(b, tmp_path) and b.step == 6 and b.value == 6
    loop.run(b, tmp_path, desc="t", images_per_step=2, log_every=3, checkpoint_every=4, progress=False)
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [3, 6, 9, 10] and b.value == 10
    assert not loop.resume(_Counter(1), tmp_path / "empty")


def test_ema_too_slow_for_the_run_is_warned_about(capsys):
    """decay^steps of the initial weights stay in the average: 15 % for --ema 0.999 over 1 872 steps."""
    text = ema_start_warning(0.999, 1872)
    assert "--ema 0.999 over 1872 steps keeps 15% of the initial random weights" in text
    suggested = float(text.split("use --ema ")[1].split()[0])
    assert suggested ** 1872 < 0.01 < 0.999 ** 1872
    assert ema_start_warning(suggested, 1872) is None and ema_start_warning(0.999, 14040) is None
    assert ema_start_warning(0.0, 5) is None
    from helpers import fmnist_trainer

    fmnist_trainer(ema=0.999)  # 64 steps
    assert "warning: --ema 0.999 over 64 steps keeps 94%" in capsys.readouterr().err
    fmnist_trainer(ema=0.5)
    assert "warning" not in capsys.readouterr().err


class _CompilingCounter(_Counter):
    """A trainer whose first step 'compiles' for a while, as torch.compile does."""
    compiles = "the counter"

    def train_step(self):
        import time

        time.sleep(1.5 if self.value == 0 else 0.005)
        return super().train_step()


def test_the_compiling_step_is_kept_out_of_the_rate(tmp_path):
    """Issue 37: after a 95 s compile a 1 s/step run read 104 s/step; the rate now counts from the step after it."""
    loop.run(_CompilingCounter(8), tmp_path, desc="t", images_per_step=100, log_every=1, progress=False)
    rates = [json.loads(line)["images_per_s"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    # with the 1.5 s compile counted, 800 images in ~1.6 s could never exceed 500 images/s
    assert rates[0] < 100 and min(rates[1:]) > 2000, rates


def test_restarting_the_clock_keeps_the_step_and_drops_the_elapsed_time():
    import io
    import time

    from tqdm import tqdm

    bar = tqdm(total=10, initial=2, file=io.StringIO(), mininterval=0)
    time.sleep(0.6)
    loop._restart_clock(bar, 3)
    assert bar.n == 3 and bar.format_dict["elapsed"] < 0.3 and bar.total == 10


class _Diverging(_Counter):
    """A trainer whose loss turns NaN at its fourth step (what a huge --lr or --diffaug-weight leads to)."""

    def train_step(self):
        self.value += 1
        return {"loss": float("nan") if self.value >= 4 else 1.0}


def test_a_loss_that_is_not_finite_stops_the_run_before_saving(tmp_path):
    """Issue 37: a run went on with a loss of 2.5e17, then NaN, and reported on NaN weights."""
    import pytest

    from diffaug_fast.errors import DiffAugError

    with pytest.raises(DiffAugError, match=r"training diverged: the loss is nan at step 4; nothing from this step"):
        loop.run(_Diverging(10), tmp_path, desc="t", images_per_step=1, checkpoint_every=2, progress=False)
    assert load_verified(tmp_path / "checkpoint.pt")["step"] == 2  # the last finite step's checkpoint is kept
