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
