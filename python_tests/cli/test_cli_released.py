"""``--denoiser PATH --denoiser-flags "..."`` and diffusers folders on the command line: train in every mode,
then eval / sample / gradients on the runs, and each mistake as one line (exit 2) naming the option. Tiny
random-init checkpoints and image folders made here; in-process through ``cli.main``."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from diffaug_fast.cli import main
from diffaug_fast.diffusion.checkpoints import unet_from_flags

# 1-channel 28x28 (one downsampling, so Fashion-MNIST fits), learned sigma, class-conditional: guided-diffusion
FMNIST_FLAGS = ("--image_size 28 --in_channels 1 --num_channels 32 --num_res_blocks 1 --channel_mult 1,1 "
                "--attention_resolutions 14 --num_head_channels 32 --learn_sigma True --class_cond True "
                "--num_classes 10 --diffusion_steps 1000 --noise_schedule linear --resblock_updown True")
# RGB 16x16 (one downsampling), improved-diffusion's spelling with a short cosine chain
RGB_FLAGS = ("--image_size 16 --num_channels 32 --num_res_blocks 1 --attention_resolutions 8 --channel_mult 1,2 "
             "--learn_sigma False --diffusion_steps 200 --noise_schedule cosine")
FAST = ["--preset", "quick", "--batch-size", "8", "--eval-limit", "4", "--de-timesteps", "", "--compile", "off", "--log-every", "1"]


def _save(flags, path):
    torch.manual_seed(0)
    net = unet_from_flags(flags)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.02)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(path)) if path.suffix == ".safetensors" else torch.save(state, path)
    return str(path)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The checkpoints (guided .pt, improved .safetensors, diffusers UNet / pipeline folders) and an RGB image
    folder: 2 classes x 10 random 20x20 images (18 train, 2 test)."""
    root = tmp_path_factory.mktemp("released")
    images = root / "images"
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (images / c).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(images / c / f"{i}.png")
    made = {"images": str(images), "fmnist_pt": _save(FMNIST_FLAGS, root / "fmnist_like.pt"),
            "rgb_st": _save(RGB_FLAGS, root / "rgb.safetensors")}
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=16, in_channels=3, out_channels=3, layers_per_block=1,
                                 block_out_channels=(16, 16), norm_num_groups=8,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"))
    unet.save_pretrained(root / "unet_only")
    diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler(num_train_timesteps=100)).save_pretrained(
        root / "pipeline")
    made.update(unet_only=str(root / "unet_only"), pipeline=str(root / "pipeline"), root=root)
    return made


def _rgb(made, size="16"):
    return ["--data", made["images"], "--image-size", size, "--channels", "3"]


def _gray(made):
    """The image folder read as 1x28x28, the Fashion-MNIST-like checkpoint's images."""
    return ["--data", made["images"], "--image-size", "28", "--channels", "1"]


def _fmnist():
    return ["--train-limit", "32"]


def _train(argv, out):
    code = main(["train", *argv, *FAST, "--out", str(out)])
    assert code == 0
    return json.loads((out / "config.json").read_text())


@pytest.mark.parametrize("mode", [["--mode", "clean"], ["--mode", "noisy"], ["--mode", "da"],
                                  ["--mode", "noisy", "--ssl", "--labels-per-class", "2"],
                                  ["--mode", "da", "--pu", "--positive", "0", "--labels-per-class", "2"]],
                         ids=["diffaug", "noisy", "da", "ssl", "pu"])
def test_train_every_mode_with_a_guided_checkpoint(made, tmp_path, mode):
    config = _train([*_gray(made), *mode, "--denoiser", made["fmnist_pt"], "--denoiser-flags", FMNIST_FLAGS],
                    tmp_path / "run")
    assert config["diffaug"]["denoiser"] == made["fmnist_pt"] and config["diffaug"]["denoiser_flags"] == FMNIST_FLAGS


def test_rgb_checkpoint_at_another_size_then_eval(made, tmp_path):
    """The 16x16 .safetensors model runs at 24x24 (the data's size); `eval` uses the recorded flags."""
    run = tmp_path / "rgb"
    _train([*_rgb(made, "24"), "--denoiser", made["rgb_st"], "--denoiser-flags", RGB_FLAGS], run)
    assert main(["eval", str(run), "--suite", "certify", "--limit", "2", "--certify-limit", "2", "--n0", "2",
                 "--n", "4", "--sigmas", "0.25", "--de-timesteps", "0,50"]) == 0
    assert (run / "eval.json").exists()


@pytest.mark.parametrize("folder", ["unet_only", "pipeline"])
def test_train_with_a_diffusers_folder(made, tmp_path, folder):
    config = _train([*_rgb(made), "--mode", "da", "--denoiser", made[folder]], tmp_path / "run")
    assert config["diffaug"]["denoiser_flags"] is None


def test_sample_and_gradients_take_the_flags(made, tmp_path):
    run = tmp_path / "noisy"
    _train([*_fmnist(), "--mode", "noisy", "--denoiser", made["fmnist_pt"], "--denoiser-flags", FMNIST_FLAGS], run)
    out = tmp_path / "samples"
    assert main(["sample", "--model", made["fmnist_pt"], "--denoiser-flags", FMNIST_FLAGS, "--num", "2",
                 "--steps", "ddim2", "--out", str(out)]) == 0
    assert np.load(out / "samples.npz")["images"].shape == (2, 1, 28, 28)
    # guided by the run's classifier, with the run's denoiser and flags; DDPM with the learned variance
    assert main(["sample", "--classifier", str(run), "--class", "1", "--num", "2", "--steps", "2", "--mode", "ddpm",
                 "--out", str(tmp_path / "guided")]) == 0
    assert main(["sample", "--model", made["pipeline"], "--num", "1", "--steps", "2",
                 "--out", str(tmp_path / "diffusers")]) == 0
    assert main(["gradients", "--classifier", str(run), "--t", "10,500", "--images", "2",
                 "--out", str(tmp_path / "grads")]) == 0


def _one_line_error(capsys, argv, option, fragment):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"error: {option}" in err and fragment in err, err


def test_bad_inputs_exit_2_with_one_line(made, tmp_path, capsys):
    out = ["--out", str(tmp_path / "never")]
    no_unet = made["root"] / "no_unet"
    (no_unet / "scheduler").mkdir(parents=True, exist_ok=True)
    cases = [
        ([*_fmnist(), "--denoiser", made["rgb_st"], "--denoiser-flags", RGB_FLAGS],
         "argument --denoiser", "the network takes 3-channel images, the data have 1 channels"),
        ([*_rgb(made, "15"), "--denoiser", made["rgb_st"], "--denoiser-flags", RGB_FLAGS],
         "argument --denoiser", "takes image sizes divisible by 2, the data are 15x15"),
        ([*_fmnist(), "--denoiser", made["fmnist_pt"], "--denoiser-flags", FMNIST_FLAGS.replace(
            "--class_cond True", "--class_cond False")],
         "argument --denoiser-flags", "unexpected keys: label_emb.weight"),
        ([*_fmnist(), "--denoiser", made["fmnist_pt"], "--denoiser-flags", FMNIST_FLAGS.replace("linear", "sqrt")],
         "argument --denoiser-flags", "--noise_schedule sqrt is not supported"),
        ([*_fmnist(), "--denoiser", made["fmnist_pt"]], "argument --denoiser", "needs the flag line"),
        ([*_fmnist(), "--denoiser", str(no_unet)], "argument --denoiser", "holds no diffusers UNet"),
        ([*_fmnist(), "--denoiser-flags", FMNIST_FLAGS], "argument --denoiser-flags", "is a shipped model"),
    ]
    for argv, option, fragment in cases:
        _one_line_error(capsys, ["train", *argv, *FAST, *out], option, fragment)
    _one_line_error(capsys, ["sample", "--model", made["fmnist_pt"], "--num", "1", "--out", str(tmp_path / "s")],
                    "argument --model", "needs the flag line")
