"""The denoiser trainer on real Fashion-MNIST: it learns, and an interrupted run resumes bit-exactly."""
import json

import pytest
import torch

from diffaug_fast.runs.checkpoint import load_verified
from diffaug_fast.train.denoiser import DenoiserConfig, export_ema, train_denoiser

pytestmark = pytest.mark.slow  # every test trains a denoiser on real Fashion-MNIST

TINY = dict(image_size=28, in_channels=1, num_channels=32, num_res_blocks=1, attention_resolutions="",
            channel_mult=(1, 2), use_scale_shift_norm=True)


def _config(steps):
    return DenoiserConfig(steps=steps, batch_size=16, checkpoint_every=3, unet=dict(TINY), lr=2e-3, warmup=1)


def test_resume_is_exact(tmp_path):
    straight = load_verified(train_denoiser(_config(6), tmp_path / "a", progress=False, limit=64))
    train_denoiser(_config(6), tmp_path / "b", progress=False, limit=64, stop_after=4)  # "interrupted" at 4
    resumed = load_verified(train_denoiser(_config(6), tmp_path / "b", progress=False, limit=64))
    assert straight["step"] == resumed["step"] == 6
    for key in straight["model"]:
        assert torch.equal(straight["model"][key], resumed["model"][key]), key
        assert torch.equal(straight["ema"][key], resumed["ema"][key]), key


def test_loss_goes_down_and_exports_safetensors(tmp_path):
    from safetensors.torch import load_file

    ckpt = train_denoiser(_config(24), tmp_path / "run", progress=False, limit=256)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 24 and sum(losses[-6:]) < 0.8 * sum(losses[:6])
    export_ema(ckpt, _config(24), tmp_path / "w.safetensors")
    weights = load_file(str(tmp_path / "w.safetensors"))
    assert set(weights) == set(load_verified(ckpt)["ema"])
    assert (tmp_path / "w.json").exists()


def test_snapshots_are_the_ema_at_their_step_and_load_as_denoisers(tmp_path):
    """--snapshot-every 2 over 6 steps (interrupted at 3, resumed): snapshots at steps 2, 4, 6; the one at 6 is
    the exported EMA, the one at 4 that of a run stopped at 4; each loads as a denoiser like `--denoiser PATH`."""
    from dataclasses import replace

    from safetensors.torch import load_file

    from diffaug_fast.runs.weights import load_exported

    config = replace(_config(6), snapshot_every=2)
    train_denoiser(config, tmp_path / "run", progress=False, limit=64, stop_after=3)
    ckpt = train_denoiser(config, tmp_path / "run", progress=False, limit=64)
    snaps = tmp_path / "run" / "snapshots"
    assert sorted(p.name for p in snaps.glob("*.safetensors")) == ["step-2.safetensors", "step-4.safetensors",
                                                                   "step-6.safetensors"]
    final = load_verified(ckpt)["ema"]
    last = load_file(str(snaps / "step-6.safetensors"))
    assert all(torch.equal(last[k], final[k]) for k in final)
    at_four = load_verified(train_denoiser(_config(4), tmp_path / "four", progress=False, limit=64))["ema"]
    mid = load_file(str(snaps / "step-4.safetensors"))
    assert all(torch.equal(mid[k], at_four[k]) for k in at_four)
    assert not all(torch.equal(mid[k], last[k]) for k in last)
    denoiser = load_exported(snaps / "step-2.safetensors")
    x = torch.zeros(2, 1, 28, 28)
    assert denoiser(x, torch.tensor([10, 500])).shape == x.shape
