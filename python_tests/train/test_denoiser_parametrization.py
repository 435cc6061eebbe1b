"""train-denoiser --parametrization eps|v|x0 (issue 17): each training target and loss against a hand computation,
an exported v / x0 model loaded by the normal loader with its parametrization and its x̂0 by the formula, exact
resume of the new option, runs written before the option continuing as eps, a larger --steps on resume, and the
one-line errors of a bad value."""
import pytest
import torch

from diffaug_fast.cli import main
from diffaug_fast.diffusion import linear_vp, q_sample
from diffaug_fast.diffusion.targets import loss_weight, prediction_loss, training_target
from diffaug_fast.ops import denoise_epilogue
from diffaug_fast.runs import files
from diffaug_fast.runs.checkpoint import load_verified, save_atomic
from diffaug_fast.runs.weights import load_denoiser, load_exported, pretrained
from diffaug_fast.train.denoiser import DenoiserConfig, denoising_loss, export_ema, train_denoiser

TINY = dict(image_size=28, in_channels=1, num_channels=32, num_res_blocks=1, attention_resolutions="",
            channel_mult=(1, 2), use_scale_shift_norm=True)
T = [10, 900]  # little noise (SNR ~ 400) and much (SNR ~ 1e-3)


def _tiny_batch():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 1, 2, 2, generator=g) * 2 - 1
    eps = torch.randn(2, 1, 2, 2, generator=g)
    pred = torch.randn(2, 1, 2, 2, generator=g)
    a, s = linear_vp().coefficients(torch.tensor(T))
    return x0, eps, pred, a, s


def _by_hand(parametrization, x0, eps, pred, a, s):
    """The loss written out pixel by pixel in float64."""
    total, count = 0.0, 0
    for b in range(2):
        ab, sb = float(a[b]), float(s[b])
        snr = ab * ab / (sb * sb)
        weight = max(snr, 1.0) if parametrization == "x0" else 1.0
        for x, e, p in zip(x0[b].flatten().tolist(), eps[b].flatten().tolist(), pred[b].flatten().tolist()):
            target = {"eps": e, "v": ab * e - sb * x, "x0": x}[parametrization]
            total += weight * (p - target) ** 2
            count += 1
    return total / count


@pytest.mark.parametrize("parametrization", ["eps", "v", "x0"])
def test_loss_of_each_parametrization_by_hand(parametrization):
    x0, eps, pred, a, s = _tiny_batch()
    loss = prediction_loss(parametrization, pred, x0, eps, a, s)
    assert loss.dtype == torch.float32
    assert float(loss) == pytest.approx(_by_hand(parametrization, x0, eps, pred, a, s), rel=1e-5)
    # the exact target has zero loss, and the epilogue of the same name turns it back into x0
    target = training_target(parametrization, x0, eps, a, s)
    assert float(prediction_loss(parametrization, target, x0, eps, a, s)) == pytest.approx(0.0, abs=1e-12)
    x_t = a.view(-1, 1, 1, 1) * x0 + s.view(-1, 1, 1, 1) * eps
    back = denoise_epilogue(x_t, target, a, s, parametrization=parametrization, backend="reference")
    torch.testing.assert_close(back, x0, atol=1e-4 if parametrization == "eps" else 2e-6, rtol=0)


def test_loss_weights_are_the_stated_ones():
    a, s = linear_vp().coefficients(torch.tensor(T))
    assert loss_weight("eps", a, s) is None and loss_weight("v", a, s) is None  # plain eps-MSE, v-MSE
    w = loss_weight("x0", a, s)
    assert float(w[0]) == pytest.approx(float(a[0] ** 2 / s[0] ** 2), rel=1e-6) and float(w[0]) > 100
    assert float(w[1]) == 1.0  # SNR < 1: plain x0-MSE
    with pytest.raises(ValueError, match="argument 'parametrization' is 'score'"):
        training_target("score", *_tiny_batch()[:2], a, s)


@pytest.mark.parametrize("parametrization", ["eps", "v", "x0"])
def test_denoising_loss_uses_the_diffused_noise(parametrization):
    """The trainer's loss: x_t and eps from the keyed diffuse op, the network's output against the target."""
    x0 = torch.rand(2, 1, 4, 4) * 2 - 1
    t, schedule, seed = torch.tensor(T), linear_vp(), 1234
    out = torch.randn(2, 1, 4, 4)
    seen = []

    def net(x_t, timesteps):
        seen.append((x_t, timesteps))
        return out

    loss = denoising_loss(net, schedule, x0, t, seed, parametrization)
    x_t, eps = q_sample(schedule, x0, t, seed=seed, return_noise=True)
    assert torch.equal(seen[0][0], x_t) and torch.equal(seen[0][1], t)
    a, s = schedule.coefficients(t)
    assert float(loss) == pytest.approx(_by_hand(parametrization, x0, eps, out, a, s), rel=1e-5)


def _config(steps, parametrization="auto", **extra):
    return DenoiserConfig(steps=steps, batch_size=8, checkpoint_every=3, unet=dict(TINY), lr=2e-3, warmup=1,
                          parametrization=parametrization, **extra)


@pytest.mark.parametrize("parametrization", ["v", "x0"])
def test_exported_model_loads_with_its_parametrization(tmp_path, parametrization):
    config = _config(1, parametrization)
    export_ema(train_denoiser(config, tmp_path / "run", progress=False, limit=8), config, tmp_path / "w.safetensors")
    assert files.read_json(tmp_path / "w.json")["parametrization"] == parametrization
    for den in (load_exported(tmp_path / "w.safetensors"), load_denoiser(str(tmp_path / "w.safetensors"))):
        assert den.parametrization == parametrization and den.schedule.kind == "vp"
        x_t, t = torch.randn(3, 1, 28, 28), torch.tensor([5, 500, 999])
        with torch.no_grad():
            out = den.net(x_t, t)
            a, s = (c.view(-1, 1, 1, 1) for c in den.schedule.coefficients(t))
            formula = a * x_t - s * out if parametrization == "v" else out
            torch.testing.assert_close(den(x_t, t), formula.clamp(-1, 1), atol=2e-6, rtol=0)


def test_auto_is_v_for_new_vp_runs_and_the_shipped_model_stays_eps(tmp_path):
    config = _config(1)
    ckpt = train_denoiser(config, tmp_path / "run", progress=False, limit=8)
    assert load_verified(ckpt)["config"]["parametrization"] == "v"
    assert files.read_json(tmp_path / "run" / files.CONFIG)["parametrization"] == "v"
    export_ema(ckpt, config, tmp_path / "w.safetensors")  # config says auto: the checkpoint's own is exported
    assert files.read_json(tmp_path / "w.json")["parametrization"] == "v"
    assert pretrained("fmnist").parametrization == "eps" and pretrained("fmnist-ve").parametrization == "score"


@pytest.mark.slow  # trains twice per parametrization
@pytest.mark.parametrize("parametrization", ["v", "x0"])
def test_resume_is_exact(tmp_path, parametrization):
    """The resume pattern of test_train_denoiser.py, for the new option."""
    straight = load_verified(train_denoiser(_config(6, parametrization), tmp_path / "a", progress=False, limit=64))
    train_denoiser(_config(6, parametrization), tmp_path / "b", progress=False, limit=64, stop_after=4)
    resumed = load_verified(train_denoiser(_config(6, parametrization), tmp_path / "b", progress=False, limit=64))
    assert straight["step"] == resumed["step"] == 6
    for key in straight["model"]:
        assert torch.equal(straight["model"][key], resumed["model"][key]), key
        assert torch.equal(straight["ema"][key], resumed["ema"][key]), key


def test_a_run_from_before_the_option_continues_as_eps_to_more_steps(tmp_path):
    """A checkpoint without 'parametrization' in its config (written before the option) resumes as eps with the
    default --parametrization auto, may be given a larger --steps, keeps its auto EMA decay and warm-up, and
    exports eps; asking for v on it is refused, naming the option."""
    run = tmp_path / "old"
    ckpt = train_denoiser(DenoiserConfig(steps=2, batch_size=8, unet=dict(TINY), parametrization="eps"), run,
                          progress=False, limit=16)
    state = load_verified(ckpt)
    del state["config"]["parametrization"]
    save_atomic(state, ckpt)
    longer = DenoiserConfig(steps=3, batch_size=8, unet=dict(TINY))  # ema/warm-up auto would now be 0.0 / 1
    resumed = load_verified(train_denoiser(longer, run, progress=False, limit=16))
    assert resumed["step"] == 3 and resumed["config"]["parametrization"] == "eps"
    assert (resumed["config"]["ema_decay"], resumed["config"]["warmup"]) == (state["config"]["ema_decay"],
                                                                            state["config"]["warmup"])
    export_ema(ckpt, longer, tmp_path / "w.safetensors")
    assert load_exported(tmp_path / "w.safetensors").parametrization == "eps"
    with pytest.raises(Exception, match=r"parametrization: 'eps' -> 'v'"):
        train_denoiser(DenoiserConfig(steps=4, batch_size=8, unet=dict(TINY), parametrization="v"), run,
                       progress=False, limit=16)
    with pytest.raises(Exception, match=r"argument --steps is 2 but the run in --out already reached step 3"):
        train_denoiser(DenoiserConfig(steps=2, batch_size=8, unet=dict(TINY)), run, progress=False, limit=16)


def _cli(argv) -> int:
    """The command's exit code, whether it returns it or argparse raises SystemExit."""
    try:
        return main(argv)
    except SystemExit as done:
        return done.code


@pytest.mark.parametrize("argv, expected", [
    (["--parametrization", "score"], "argument --parametrization: invalid choice: 'score'"),
    (["--kind", "ve", "--parametrization", "v"], "argument --parametrization v is for --kind vp"),
])
def test_bad_parametrization_is_one_line(tmp_path, capsys, argv, expected):
    code = _cli(["train-denoiser", *argv, "--steps", "1", "--limit", "8", "--batch-size", "8", "--out",
                 str(tmp_path / "d")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "d" / files.CHECKPOINT).exists()


def test_device_is_checked_before_any_work(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert _cli(["train-denoiser", "--device", "cuda", "--steps", "1", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "argument --device is 'cuda' but this machine has 0 CUDA GPUs" in err[0], err
    assert not (tmp_path / "d" / files.CHECKPOINT).exists()
