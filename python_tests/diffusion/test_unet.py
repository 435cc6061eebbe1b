"""Our UNet / encoder against guided-diffusion's (and improved-diffusion's UNet): same parameter names and shapes (so checkpoints load with
strict=True) and the same outputs for the same weights, recorded from their code by fixtures/record_*.py."""
from pathlib import Path

import pytest
import torch

from diffaug_fast.diffusion.unet import EncoderUNetModel, UNetModel, timestep_embedding

from unet_fixture import CONFIGS, IMPROVED, RELEASED, deterministic_state, inputs

SMALL = {**CONFIGS, **IMPROVED}

RECORD = torch.load(Path(__file__).with_name("fixtures") / "guided_diffusion_outputs.pt", weights_only=True)


def build(config):
    cls = UNetModel if config["kind"] == "unet" else EncoderUNetModel
    return cls(**config["ours"]).eval()


@pytest.mark.parametrize("name", list(SMALL))
def test_parameter_names_and_shapes_match(name):
    ours = {k: list(v.shape) for k, v in build(SMALL[name]).state_dict().items()}
    assert ours == RECORD[name]["shapes"]


@pytest.mark.parametrize("name", list(RELEASED))
def test_released_checkpoint_layouts_match(name):
    """Built from a released checkpoint's flags, ours has exactly its parameter names and shapes."""
    with torch.device("meta"):
        model = build(RELEASED[name])
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == RECORD[name]["shapes"]


@pytest.mark.parametrize("name", list(SMALL))
def test_outputs_match_for_the_same_weights(name):
    config = SMALL[name]
    model = build(config)
    model.load_state_dict(deterministic_state(model.state_dict()), strict=True)
    x, t, y = inputs(config)
    with torch.no_grad():
        out = model(x, t, y) if y is not None else model(x, t)
    torch.testing.assert_close(out, RECORD[name]["output"], atol=1e-4, rtol=1e-4)


def test_fresh_unet_predicts_zero_and_has_gradients():
    """Zero-initialised output layers, as in guided-diffusion: training starts from eps_hat = 0."""
    model = UNetModel(16, 1, 32, num_res_blocks=1, attention_resolutions="8", channel_mult=(1, 2))
    x = torch.randn(2, 1, 16, 16, requires_grad=True)
    out = model(x, torch.tensor([0, 999]))
    assert torch.count_nonzero(out) == 0
    out.sum().backward()
    assert model.out[2].weight.grad.abs().sum() > 0


def test_timestep_embedding_is_cos_then_sin():
    emb = timestep_embedding(torch.tensor([0.0, 2.0]), 5)
    assert emb.shape == (2, 5)
    torch.testing.assert_close(emb[0], torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(emb[1, 0], torch.cos(torch.tensor(2.0)))


def test_class_conditioning_is_checked_and_flags_validated():
    model = UNetModel(16, 1, 32, num_res_blocks=1, attention_resolutions="8", channel_mult=(1, 2), class_cond=True,
                      num_classes=10)
    with pytest.raises(ValueError, match="labels y if and only if"):
        model(torch.zeros(1, 1, 16, 16), torch.tensor([1]))
    with pytest.raises(ValueError, match="not divisible by num_head_channels"):
        UNetModel(16, 1, 32, num_res_blocks=1, attention_resolutions="8", channel_mult=(1, 2), num_head_channels=24)
    with pytest.raises(ValueError, match="no default channel_mult for image_size=20"):
        UNetModel(20, 1, 32)


@pytest.mark.slow  # torch.compile of a UNet with Inductor: 4-40 s, by cache state
def test_channels_last_and_compile_agree():
    model = UNetModel(16, 1, 32, num_res_blocks=1, attention_resolutions="8", channel_mult=(1, 2)).eval()
    model.load_state_dict(deterministic_state(model.state_dict()))
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([5, 500])
    with torch.no_grad():
        ref = model(x, t)
        cl = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last), t)
        compiled = torch.compile(model, fullgraph=True)(x, t)
    torch.testing.assert_close(cl, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(compiled, ref, atol=1e-4, rtol=1e-4)
