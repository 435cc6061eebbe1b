"""VE (score-SDE style) denoisers: the sigma-conditioned score network, its Denoiser, its VP view for
sampling, and the VE variant of the denoiser trainer."""
import pytest
import torch

from diffaug_fast.diffusion import Denoiser, ve_geometric
from diffaug_fast.diffusion.unet import UNetModel
from diffaug_fast.diffusion.ve import VEScoreNet, vp_equivalent
from diffaug_fast.runs.weights import load_exported
from diffaug_fast.diffusion.sampling import eps_model, sample
from diffaug_fast.train.denoiser import DenoiserConfig, export_ema, train_denoiser

TINY = dict(image_size=8, in_channels=1, num_channels=32, num_res_blocks=1, attention_resolutions="",
            channel_mult=(1, 2))


def _ve_denoiser(clip=None):
    torch.manual_seed(0)
    net = VEScoreNet(UNetModel(**TINY), 0.01, 50.0).eval()
    return Denoiser(net, ve_geometric(1000, 0.01, 50.0), parametrization="score", condition="sigma", clip=clip)


@torch.no_grad()
def test_score_net_preconditioning_and_denoiser():
    den = _ve_denoiser()
    x = torch.randn(5, 1, 8, 8) * 3
    t = torch.tensor([0, 1, 400, 900, 999])
    sigma = den.schedule.sigmas[t].float()
    sd2 = 0.25
    c_in, c_skip = 1 / torch.sqrt(sigma**2 + sd2), sd2 / (sigma**2 + sd2)
    c_out = sigma * 0.5 / torch.sqrt(sigma**2 + sd2)
    b = lambda v: v.view(-1, 1, 1, 1)  # noqa: E731
    # the network sees c_in*x and log-sigma on the 0..999 scale; D = c_skip*x + c_out*F
    raw = den.net.net(x * b(c_in), 999 * torch.log(sigma / 0.01) / torch.log(torch.tensor(5000.0)))
    torch.testing.assert_close(den.net.raw(x, sigma), raw)
    d = b(c_skip) * x + b(c_out) * raw
    torch.testing.assert_close(den.net.denoise(x, sigma), d)
    torch.testing.assert_close(den.net(x, sigma) * b(sigma**2), d - x, atol=2e-6, rtol=1e-4)  # score
    torch.testing.assert_close(den(x, t), d, atol=5e-5, rtol=1e-4)  # through the fused score epilogue
    # the training target is the F that makes D exact
    x0 = torch.rand(5, 1, 8, 8) * 2 - 1
    target = den.net.training_target(x, x0, sigma)
    torch.testing.assert_close(b(c_skip) * x + b(c_out) * target, x0, atol=1e-5, rtol=1e-5)


def test_vp_equivalent_has_the_same_noise_to_signal_ratio():
    ve = ve_geometric(100, 0.02, 30.0)
    vp = vp_equivalent(ve)
    assert vp.kind == "vp"
    torch.testing.assert_close(vp.sigmas, ve.sigmas)
    torch.testing.assert_close(vp.signal**2 + vp.noise**2, torch.ones(100, dtype=torch.float64))


@torch.no_grad()
def test_eps_model_of_a_ve_denoiser_gives_the_same_x0_on_the_vp_chain():
    den = _ve_denoiser()
    model, chain = eps_model(den)
    t = torch.tensor([3, 250, 700, 999])
    x_ve = torch.randn(4, 1, 8, 8) * den.schedule.sigmas[t].float().view(-1, 1, 1, 1)
    a_vp, s_vp = chain.coefficients(t)
    x_vp = x_ve * a_vp.view(-1, 1, 1, 1)
    eps = model(x_vp, chain.model_timesteps(t))
    x0_from_vp = (x_vp - s_vp.view(-1, 1, 1, 1) * eps) / a_vp.view(-1, 1, 1, 1)
    torch.testing.assert_close(x0_from_vp, den(x_ve, t), atol=1e-3, rtol=1e-4)


def test_ve_denoiser_samples_deterministically():
    den = _ve_denoiser(clip=True)
    model, chain = eps_model(den)
    a = sample(model, (2, 1, 8, 8), chain, steps="ddim5", seed=3, progress=False)
    b = sample(model, (2, 1, 8, 8), chain, steps="ddim5", seed=3, progress=False)
    assert torch.equal(a, b) and a.abs().max() <= 1 + 1e-6


@pytest.mark.slow  # trains a denoiser on real Fashion-MNIST
def test_train_ve_kind_learns_resumes_and_exports(tmp_path):
    cfg = DenoiserConfig(kind="ve", steps=20, batch_size=16, checkpoint_every=5, warmup=1,
                         unet=dict(TINY, image_size=28, num_channels=32))
    ckpt = train_denoiser(cfg, tmp_path / "run", progress=False, limit=128)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    losses = [float(line.split('"loss": ')[1].rstrip("}")) for line in lines]
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])
    export_ema(ckpt, cfg, tmp_path / "ve.safetensors")
    den = load_exported(tmp_path / "ve.safetensors")
    assert den.schedule.kind == "ve" and den.parametrization == "score" and den.condition == "sigma"
    x = torch.zeros(2, 1, 28, 28)
    assert den(x, torch.tensor([10, 900])).shape == x.shape
