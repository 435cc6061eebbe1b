"""A diffusers UNet2DModel folder as a Denoiser, checked against diffusers' own x0 prediction; loading one says
nothing on stderr, so a command's one-line error stays one line."""
import subprocess
import sys

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


def _save_small_pipeline(folder):
    """A tiny UNet2DModel + DDPM scheduler as save_pretrained writes them."""
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                                 block_out_channels=(16, 16), norm_num_groups=8,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"))
    unet.save_pretrained(folder / "unet")
    diffusers.DDPMScheduler(num_train_timesteps=1000).save_pretrained(folder / "scheduler")
    return folder


def test_loading_a_diffusers_folder_is_silent(tmp_path, capfd):
    folder = _save_small_pipeline(tmp_path / "pipeline")
    capfd.readouterr()
    denoiser_from_diffusers(folder)
    out, err = capfd.readouterr()  # without accelerate, diffusers' default logged a six-line install hint here
    assert (out, err) == ("", "")


@pytest.mark.slow  # a CLI subprocess
def test_an_error_with_a_diffusers_denoiser_is_one_line(tmp_path):
    folder = _save_small_pipeline(tmp_path / "pipeline")
    done = subprocess.run([sys.executable, "-m", "diffaug_fast.cli", "denoiser-report", "--model", str(folder),
                           "--out", str(tmp_path / "report")], capture_output=True, text=True, cwd=tmp_path,
                          timeout=600)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"diffaug-fast: error: argument --data: give the images {folder} was "
                                        "trained on (fmnist, cifar10:DIR or an image folder); its files do not say"]
