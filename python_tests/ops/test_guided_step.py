"""Op guided_step: DDPM / DDIM reverse steps with guidance, against the reference and diffusers' schedulers."""
import pytest
import torch

from diffaug_fast.diffusion import linear_vp, respace, step_coefficients
from diffaug_fast.ops import guided_step, layout

from conftest import tolerance

diffusers = pytest.importorskip("diffusers")


def _case(shape, dtype, device, seed=0, learn_sigma=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    out_shape = (shape[0], 2 * shape[1]) + tuple(shape[2:]) if learn_sigma else shape
    out = torch.randn(out_shape, generator=g)
    if learn_sigma:
        out[:, shape[1]:] = out[:, shape[1]:].tanh()  # the variance half lives in [-1, 1]
    grad = torch.randn(shape, generator=g)
    return (x.to(device=device, dtype=dtype), out.to(device=device, dtype=dtype), grad.to(device=device, dtype=dtype))


@pytest.mark.parametrize("mode, variance, learn_sigma", [
    ("ddpm", "fixed_small", False), ("ddpm", "fixed_large", False), ("ddpm", "learned", True),
    ("ddim", "fixed_small", False), ("ddim", "fixed_small", True)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
# the 64x1x28x28 batch is slow without a GPU: Triton's interpreter takes 2-7 s a case on CPU
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (5, 3, 7, 9), pytest.param((64, 1, 28, 28), marks=pytest.mark.slow)],
                         ids=str)
def test_matches_reference(device_backend, mode, variance, learn_sigma, dtype, shape):
    device, backend = device_backend
    x, out, grad = _case(shape, dtype, device, learn_sigma=learn_sigma)
    t = torch.linspace(0, 999, shape[0]).long()
    coef = step_coefficients(linear_vp(), t, mode=mode, eta=0.5, variance=variance, device=device)
    for kwargs in (dict(), dict(grad=grad, scale=2.5, clip=1.0)):
        ours = guided_step(x, out, coef, mode=mode, learn_sigma=learn_sigma, seed=9, offset=4, backend=backend,
                           **kwargs)
        ref = guided_step(x, out, coef, mode=mode, learn_sigma=learn_sigma, seed=9, offset=4, backend="reference",
                          **kwargs)
        assert ours.dtype == dtype and ours.shape == x.shape
        tol = tolerance(dtype) if dtype != torch.float32 else dict(atol=5e-5, rtol=1e-5)
        torch.testing.assert_close(ours, ref, **tol)


def test_channels_last_and_noise_independent_of_layout(device_backend):
    device, backend = device_backend
    x, out, grad = _case((3, 3, 6, 5), torch.float32, device)
    coef = step_coefficients(linear_vp(), torch.tensor([10, 500, 990]), device=device)
    nchw = guided_step(x, out, coef, grad=grad, seed=1, backend=backend)
    cl = guided_step(x.contiguous(memory_format=torch.channels_last), out.contiguous(memory_format=torch.channels_last),
                     coef, grad=grad.contiguous(memory_format=torch.channels_last), seed=1, backend=backend)
    assert cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(cl, nchw, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("steps, idx", [(50, 49), (50, 20), (50, 1), (50, 0), (10, 5)])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_matches_diffusers(device_backend, steps, idx, eta):
    device, backend = device_backend
    theirs = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)
    theirs.set_timesteps(steps)
    sched = respace(linear_vp(), f"ddim{steps}")
    x, eps, _ = _case((4, 1, 8, 8), torch.float32, "cpu")
    z = torch.randn_like(x)
    expected = theirs.step(eps, int(sched.timesteps[idx]), x, eta=eta, variance_noise=z).prev_sample
    coef = step_coefficients(sched, torch.full((4,), idx), mode="ddim", eta=eta, device=device)
    got = guided_step(x.to(device), eps.to(device), coef, mode="ddim", noise=z.to(device), backend=backend)
    torch.testing.assert_close(got.cpu(), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("variance, theirs_variance", [("fixed_small", "fixed_small"), ("fixed_large", "fixed_large"),
                                                       ("learned", "learned_range")])
@pytest.mark.parametrize("t", [999, 500, 1, 0])
def test_ddpm_matches_diffusers(device_backend, variance, theirs_variance, t):
    device, backend = device_backend
    theirs = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", variance_type=theirs_variance,
                                     clip_sample=True)
    learned = variance == "learned"
    x, out, _ = _case((4, 1, 8, 8), torch.float32, "cpu", learn_sigma=learned)
    expected = theirs.step(out, t, x, generator=torch.Generator().manual_seed(3)).prev_sample
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))  # the noise diffusers drew
    coef = step_coefficients(linear_vp(), torch.full((4,), t), mode="ddpm", variance=variance, device=device)
    got = guided_step(x.to(device), out.to(device), coef, mode="ddpm", learn_sigma=learned, clip=1.0,
                      noise=z.to(device), backend=backend)
    torch.testing.assert_close(got.cpu(), expected, atol=1e-4, rtol=1e-4)


def test_guidance_formulas(device_backend):
    device, backend = device_backend
    x, eps, grad = _case((4, 2, 5, 5), torch.float32, device)
    t = torch.tensor([900, 600, 300, 5])
    sched = linear_vp()
    # DDPM: guidance shifts the mean by scale * Sigma * grad, nothing else changes
    coef = step_coefficients(sched, t, mode="ddpm", device=device)
    plain = guided_step(x, eps, coef, seed=2, backend=backend)
    guided = guided_step(x, eps, coef, grad=grad, scale=3.0, seed=2, backend=backend)
    var = coef[:, layout.COL_DDPM_LOG_VAR_MIN].exp().view(-1, 1, 1, 1)
    torch.testing.assert_close(guided - plain, 3.0 * var * grad, atol=1e-5, rtol=1e-4)
    # DDIM: guidance is the unguided step fed eps - sqrt(1 - abar) * scale * grad
    coef = step_coefficients(sched, t, mode="ddim", eta=0.3, device=device)
    s = coef[:, layout.COL_S].view(-1, 1, 1, 1)
    guided = guided_step(x, eps, coef, mode="ddim", grad=grad, scale=2.0, seed=2, backend=backend)
    shifted = guided_step(x, eps - s * 2.0 * grad, coef, mode="ddim", seed=2, backend=backend)
    torch.testing.assert_close(guided, shifted, atol=1e-5, rtol=1e-5)
    # scale 0 is exactly unguided
    for mode in ("ddpm", "ddim"):
        coef = step_coefficients(sched, t, mode=mode, device=device)
        assert torch.equal(guided_step(x, eps, coef, mode=mode, grad=grad, scale=0.0, seed=5, backend=backend),
                           guided_step(x, eps, coef, mode=mode, seed=5, backend=backend))


@pytest.mark.parametrize("mode, variance, learn_sigma", [
    ("ddpm", "fixed_small", False), ("ddpm", "learned", True), ("ddim", "fixed_small", False)])
@pytest.mark.parametrize("given_noise", [False, True], ids=["philox", "noise"])
@pytest.mark.parametrize("clip", [None, 1.0], ids=["noclip", "clip"])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "cl"])
def test_gradients_match_autograd_of_reference(device_backend, mode, variance, learn_sigma, given_noise, clip, fmt):
    """The registered backward (x_t, model_out incl. the learned-variance half, grad, noise) against autograd
    through the plain-PyTorch reference."""
    device, backend = device_backend
    x, out, grad = _case((3, 2, 5, 4), torch.float32, device, seed=4, learn_sigma=learn_sigma)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(8)).to(device) if given_noise else None
    coef = step_coefficients(linear_vp(), torch.tensor([700, 150, 0]), mode=mode, eta=0.7, variance=variance,
                             device=device)
    weight = torch.randn(x.shape, generator=torch.Generator().manual_seed(5)).to(device)

    def grads(which):
        inputs = [t.detach().contiguous(memory_format=fmt).requires_grad_() for t in (x, out, grad)]
        z = noise.detach().clone().requires_grad_() if noise is not None else None
        y = guided_step(inputs[0], inputs[1], coef, mode=mode, grad=inputs[2], scale=1.7, clip=clip,
                        learn_sigma=learn_sigma, seed=6, offset=3, noise=z, backend=which)
        wrt = inputs + ([z] if z is not None else [])
        return torch.autograd.grad((y * weight).sum(), wrt)

    for ours, ref in zip(grads(backend), grads("reference")):
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_torch_compile_fullgraph(device_backend):
    device, backend = device_backend
    x, eps, grad = _case((4, 1, 8, 8), torch.float32, device)
    coef = step_coefficients(linear_vp(), torch.tensor([100, 200, 300, 400]), device=device)

    def step(x, eps, grad):
        return guided_step(x, eps, coef, grad=grad, scale=1.5, seed=0, backend=backend) * 2

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager" if backend == "triton" else "inductor")
    torch.testing.assert_close(compiled(x, eps, grad), step(x, eps, grad))


@pytest.mark.parametrize("call, match", [
    (lambda x, c: guided_step(x, x, c, mode="euler"), r"'mode' is 'euler'"),
    (lambda x, c: guided_step(x, x, c[:1]), r"'coef' must be a \[2, 8\] tensor"),
    (lambda x, c: guided_step(x, x[:, :0], c), r"'model_out' must have shape \[2, 1, 4, 4\]"),
    (lambda x, c: guided_step(x, x, c, learn_sigma=True), r"twice the channels"),
    (lambda x, c: guided_step(x, x, c, grad=x[:1]), r"'grad' must have the shape of x_t"),
    (lambda x, c: guided_step(x, x, c * float("nan")), r"'coef' contains NaN"),
    (lambda x, c: step_coefficients(linear_vp(), [1000]), r"argument 't' must lie in \[0, 999\]"),
    (lambda x, c: step_coefficients(linear_vp(), [3], variance="big"), r"'variance' is 'big'"),
])
def test_bad_input_is_named(call, match):
    x = torch.randn(2, 1, 4, 4)
    coef = step_coefficients(linear_vp(), [10, 20])
    with pytest.raises((ValueError, TypeError), match=match):
        call(x, coef)
