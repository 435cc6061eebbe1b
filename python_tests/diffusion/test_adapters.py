"""A diffusers UNet2DModel folder as a Denoiser, checked against diffusers' own x0 prediction."""
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from diffaug_fast.diffusion.adapters import denoiser_from_diffusers  # noqa: E402


@pytest.mark.parametrize("prediction_type, beta_schedule", [("epsilon", "linear"), ("v_prediction", "squaredcos_cap_v2")])
def test_x0_matches_diffusers_scheduler(tmp_path, prediction_type, beta_schedule):
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                                 block_out_channels=(16, 16), norm_num_groups=8,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"))
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=beta_schedule,
                                        prediction_type=prediction_type, clip_sample=True)
    unet.save_pretrained(tmp_path / "unet")
    scheduler.save_pretrained(tmp_path / "scheduler")
    den = denoiser_from_diffusers(tmp_path).eval()
    assert den.parametrization == {"epsilon": "eps", "v_prediction": "v"}[prediction_type]
    x = torch.randn(2, 1, 8, 8)
    t = torch.tensor([10, 700])
    with torch.no_grad():
        ours = den(x, t)
        out = unet(x, t).sample
        theirs = torch.stack([scheduler.step(out[i:i + 1], int(t[i]), x[i:i + 1]).pred_original_sample[0]
                              for i in range(2)])
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        denoiser_from_diffusers(tmp_path / "nope")
