"""Released diffusion checkpoints through ``load_denoiser``: guided-diffusion / improved-diffusion weights (.pt and
.safetensors) described by their flag line, and diffusers folders saved by diffusers itself. Tiny random-init
networks made here; the command line is tested in python_tests/cli/test_cli_released.py."""
import pytest
import torch
from safetensors.torch import save_file

from diffaug_fast.diffusion import cosine_vp, linear_vp
from diffaug_fast.diffusion.checkpoints import CheckpointError, unet_from_flags
from diffaug_fast.errors import DiffAugError
from diffaug_fast.runs.weights import load_denoiser

# guided-diffusion spelling (guided-only flags present: timesteps are not rescaled)
GUIDED = ("--attention_resolutions 8 --class_cond True --num_classes 3 --diffusion_steps 1000 --image_size 16 "
          "--learn_sigma True --noise_schedule linear --num_channels 32 --num_head_channels 16 --num_res_blocks 1 "
          "--resblock_updown True --use_fp16 True --use_scale_shift_norm True --channel_mult 1,2")
# improved-diffusion spelling: 4000 cosine steps, timesteps rescaled to 0..1000 as its default does
IMPROVED = ("--image_size 32 --num_channels 32 --num_res_blocks 1 --attention_resolutions 8 --learn_sigma False "
            "--dropout 0.3 --diffusion_steps 4000 --noise_schedule cosine --in_channels 1 --lr 1e-4 --batch_size 128")


def random_unet(flags, seed=0):
    """Our UNet built from guided-diffusion flags, its weights (the zero-initialised ones too) random."""
    torch.manual_seed(seed)
    net = unet_from_flags(flags.replace("--use_fp16 True", "--use_fp16 False"))  # on CPU loading ignores it
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.05)
    return net.eval()


def save(net, path):
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(path)) if path.suffix == ".safetensors" else torch.save(state, path)
    return path


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_guided_checkpoint_with_learned_sigma_and_classes(tmp_path, suffix):
    net = random_unet(GUIDED)
    den = load_denoiser(save(net, tmp_path / f"model{suffix}"), flags=GUIDED)
    assert den.learn_sigma and den.parametrization == "eps" and den.image_shape == (3, 16, 16)
    torch.testing.assert_close(den.schedule.signal, linear_vp(1000).signal)
    assert not any(p.requires_grad for p in den.parameters())
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([5, 900])
    mean_class = torch.full((2, 3), 1 / 3)
    with torch.no_grad():
        out = net(x, t, mean_class)  # no label given: the average of the class embeddings
        torch.testing.assert_close(den.model_output(x, t), out)
        a, s = den.schedule.coefficients(t)
        expected = ((x - s.view(-1, 1, 1, 1) * out[:, :3]) / a.view(-1, 1, 1, 1)).clamp(-1, 1)
        torch.testing.assert_close(den(x, t), expected, atol=1e-5, rtol=1e-5)
        # a label, when the caller has one, conditions on that class (= its embedding row)
        torch.testing.assert_close(den.net(x, t, torch.tensor([2, 0])), net(x, t, torch.tensor([2, 0])))
        torch.testing.assert_close(net(x, t, torch.eye(3)[[2, 0]]), net(x, t, torch.tensor([2, 0])))
    # fully convolutional: 24x24 (divisible by 2, its one downsampling) goes through; the channels must match
    assert den.shape_problem((3, 24, 24)) is None
    assert "divisible by 2" in den.shape_problem((3, 15, 16))
    assert "3-channel" in den.shape_problem((1, 16, 16))


def test_improved_checkpoint_rescales_timesteps(tmp_path):
    net = random_unet(IMPROVED)
    den = load_denoiser(save(net, tmp_path / "cifar_like.pt"), flags=IMPROVED)
    assert len(den.schedule) == 4000 and not den.learn_sigma
    torch.testing.assert_close(den.schedule.signal, cosine_vp(4000).signal)
    x, t = torch.randn(2, 1, 32, 32), torch.tensor([400, 3999])
    with torch.no_grad():
        torch.testing.assert_close(den.model_output(x, t), net(x, t.float() / 4))
    explicit = load_denoiser(tmp_path / "cifar_like.pt", flags=IMPROVED + " --rescale_timesteps False")
    with torch.no_grad():
        torch.testing.assert_close(explicit.model_output(x, t), net(x, t))


def test_flag_mistakes_name_the_option(tmp_path):
    path = save(random_unet(GUIDED), tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match=r"argument --denoiser-flags: .* does not fit .*learn_sigma"):
        load_denoiser(path, flags=GUIDED.replace("--learn_sigma True", "--learn_sigma False"))
    with pytest.raises(CheckpointError, match="argument --denoiser-flags: --noise_schedule sqrt is not supported"):
        load_denoiser(path, flags=GUIDED.replace("linear", "sqrt"))
    with pytest.raises(CheckpointError, match="argument --denoiser-flags: unknown flag --image_sise"):
        load_denoiser(path, flags=GUIDED.replace("image_size", "image_sise"))
    with pytest.raises(CheckpointError, match="--learn_sigma is 'yes'; expected True or False"):
        load_denoiser(path, flags=GUIDED.replace("--learn_sigma True", "--learn_sigma yes"))
    with pytest.raises(DiffAugError, match="argument --denoiser .*model.pt: a released .* needs the flag line"):
        load_denoiser(path)
    with pytest.raises(DiffAugError, match="argument --denoiser-flags: --denoiser fmnist is a shipped model"):
        load_denoiser("fmnist", flags=GUIDED)
    with pytest.raises(FileNotFoundError, match="argument --model: /nonexistent.pt does not exist"):
        load_denoiser("/nonexistent.pt", flags=GUIDED, option="--model")


def tiny_diffusers_unet(channels=3, size=16):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    return diffusers.UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels, layers_per_block=1,
                                 block_out_channels=(16, 16), norm_num_groups=8,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D")).eval()


def test_diffusers_unet_alone_and_in_a_pipeline(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    unet = tiny_diffusers_unet()
    unet.save_pretrained(tmp_path / "unet_only")
    alone = load_denoiser(tmp_path / "unet_only")
    torch.testing.assert_close(alone.schedule.signal, linear_vp(1000).signal)  # DDPM's schedule by default
    assert alone.image_shape == (3, 16, 16) and alone.shape_problem((3, 24, 24)) is None
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=200, beta_schedule="squaredcos_cap_v2",
                                        prediction_type="v_prediction")
    diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp_path / "pipeline")
    piped = load_denoiser(tmp_path / "pipeline")
    assert len(piped.schedule) == 200 and piped.parametrization == "v"
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 150])
    with torch.no_grad():
        torch.testing.assert_close(piped.model_output(x, t), unet(x, t).sample)
    assert "3-channel" in piped.shape_problem((1, 16, 16))


def test_diffusers_folder_mistakes(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    diffusers.DDPMScheduler().save_pretrained(tmp_path / "no_unet" / "scheduler")
    with pytest.raises(CheckpointError, match="argument --denoiser: .*no_unet holds no diffusers UNet"):
        load_denoiser(tmp_path / "no_unet")
    tiny_diffusers_unet().save_pretrained(tmp_path / "odd")
    diffusers.DDPMScheduler(beta_schedule="scaled_linear").save_pretrained(tmp_path / "odd" / "scheduler")
    with pytest.raises(CheckpointError, match="beta_schedule 'scaled_linear' is not supported"):
        load_denoiser(tmp_path / "odd")
    with pytest.raises(DiffAugError, match="argument --denoiser-flags: .* is a diffusers folder"):
        load_denoiser(tmp_path / "odd", flags="--image_size 16")
