"""Op guided_step: DDPM / DDIM reverse steps with guidance, against the reference and diffusers' schedulers."""
import pytest
import torch

from diffaug_fast.diffusion import linear_vp, respace, step_coefficients
from diffaug_fast.ops import guided_step, layout

from conftest import tolerance

diffusers = pytest.importorskip("diffusers")


def _modes(mode):
    """guided_step's (mode, ddim_guidance) for a test's mode name: 'ddpm', 'ddim' (guided-diffusion's order, the
    default) or 'ddim_cas' (ddim_guidance='clip_after_shift')."""
    if mode == "ddim_cas":
        return "ddim", dict(mode="ddim", ddim_guidance="clip_after_shift")
    return mode, dict(mode=mode)


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
    ("ddim", "fixed_small", False), ("ddim", "fixed_small", True), ("ddim_cas", "fixed_small", False),
    ("ddim_cas", "fixed_small", True)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
# the 64x1x28x28 batch is slow without a GPU: Triton's interpreter takes 2-7 s a case on CPU
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (5, 3, 7, 9), pytest.param((64, 1, 28, 28), marks=pytest.mark.slow)],
                         ids=str)
def test_matches_reference(device_backend, mode, variance, learn_sigma, dtype, shape):
    device, backend = device_backend
    x, out, grad = _case(shape, dtype, device, learn_sigma=learn_sigma)
    t = torch.linspace(0, 999, shape[0]).long()
    mode, modes = _modes(mode)
    coef = step_coefficients(linear_vp(), t, mode=mode, eta=0.5, variance=variance, device=device)
    for kwargs in (dict(), dict(grad=grad, scale=2.5, clip=1.0)):
        ours = guided_step(x, out, coef, learn_sigma=learn_sigma, seed=9, offset=4, backend=backend, **modes,
                           **kwargs)
        ref = guided_step(x, out, coef, learn_sigma=learn_sigma, seed=9, offset=4, backend="reference", **modes,
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
    # DDIM, guided-diffusion's order (x0 clipped before the shift, not after): past the clamp the step is linear in
    # the guidance, out = unguided + scale*s*(a_prev*s/a - dir)*grad, whatever the clip does
    coef = step_coefficients(sched, t, mode="ddim", eta=0.3, device=device)
    col = {k: coef[:, k].view(-1, 1, 1, 1) for k in range(layout.STEP_COEFFICIENTS)}
    a, s = col[layout.COL_A], col[layout.COL_S]
    for clip in (None, 1.0):
        guided = guided_step(x, eps, coef, mode="ddim", grad=grad, scale=2.0, clip=clip, seed=2, backend=backend)
        plain = guided_step(x, eps, coef, mode="ddim", clip=clip, seed=2, backend=backend)
        shift = 2.0 * s * (col[layout.COL_DDIM_A_PREV] * s / a - col[layout.COL_DDIM_DIR]) * grad
        torch.testing.assert_close(guided, plain + shift, atol=1e-5, rtol=1e-5)
    # DDIM clip after shift: the unguided step fed eps - sqrt(1 - abar) * scale * grad
    guided = guided_step(x, eps, coef, mode="ddim", grad=grad, scale=2.0, clip=1.0, ddim_guidance="clip_after_shift",
                         seed=2, backend=backend)
    shifted = guided_step(x, eps - s * 2.0 * grad, coef, mode="ddim", clip=1.0, seed=2, backend=backend)
    torch.testing.assert_close(guided, shifted, atol=1e-5, rtol=1e-5)
    # scale 0 is exactly unguided, and unguided the two DDIM orders are the same step
    for mode in ("ddpm", "ddim", "ddim_cas"):
        mode, modes = _modes(mode)
        coef = step_coefficients(sched, t, mode=mode, device=device)
        plain = guided_step(x, eps, coef, mode=mode, clip=1.0, seed=5, backend=backend)
        assert torch.equal(guided_step(x, eps, coef, grad=grad, scale=0.0, clip=1.0, seed=5, backend=backend,
                                       **modes), plain)
        assert torch.equal(guided_step(x, eps, coef, clip=1.0, seed=5, backend=backend, **modes), plain)


@pytest.mark.parametrize("mode, variance, learn_sigma", [
    ("ddpm", "fixed_small", False), ("ddpm", "learned", True), ("ddim", "fixed_small", False),
    ("ddim", "fixed_small", True), ("ddim_cas", "fixed_small", False)])
@pytest.mark.parametrize("given_noise", [False, True], ids=["philox", "noise"])
@pytest.mark.parametrize("clip", [None, 1.0], ids=["noclip", "clip"])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "cl"])
def test_gradients_match_autograd_of_reference(device_backend, mode, variance, learn_sigma, given_noise, clip, fmt):
    """The registered backward (x_t, model_out incl. the learned-variance half, grad, noise) against autograd
    through the plain-PyTorch reference."""
    device, backend = device_backend
    x, out, grad = _case((3, 2, 5, 4), torch.float32, device, seed=4, learn_sigma=learn_sigma)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(8)).to(device) if given_noise else None
    mode, modes = _modes(mode)
    coef = step_coefficients(linear_vp(), torch.tensor([700, 150, 0]), mode=mode, eta=0.7, variance=variance,
                             device=device)
    weight = torch.randn(x.shape, generator=torch.Generator().manual_seed(5)).to(device)

    def grads(which):
        inputs = [t.detach().contiguous(memory_format=fmt).requires_grad_() for t in (x, out, grad)]
        z = noise.detach().clone().requires_grad_() if noise is not None else None
        y = guided_step(inputs[0], inputs[1], coef, grad=inputs[2], scale=1.7, clip=clip, learn_sigma=learn_sigma,
                        seed=6, offset=3, noise=z, backend=which, **modes)
        wrt = inputs + ([z] if z is not None else [])
        return torch.autograd.grad((y * weight).sum(), wrt)

    for ours, ref in zip(grads(backend), grads("reference")):
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)



def _strided(t, how):
    """t's values in a layout: NCHW, channels-last, or a non-contiguous view (every other column of a wider tensor)."""
    if how == "cl":
        return t.contiguous(memory_format=torch.channels_last)
    if how == "strided":
        wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
        wide[..., ::2] = t
        view = wide[..., ::2]
        assert view.shape[-1] == 1 or not view.is_contiguous()
        return view
    return t.contiguous()


@pytest.mark.parametrize("ddim_guidance", ["guided_diffusion", "clip_after_shift"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 3, 7, 5), (2, 5)], ids=str)
@pytest.mark.parametrize("how", ["nchw", "cl", "strided"])
def test_ddim_guidance_values_and_gradients(device_backend, ddim_guidance, dtype, shape, how):
    """Both DDIM guidance orders, learned-sigma outputs (DDIM ignores the second half), odd sizes, fp32 / bf16,
    channels-last and non-contiguous inputs: values against the reference, the registered backward against
    autograd through the reference (x_t, the whole model output, grad, noise)."""
    device, backend = device_backend
    if how == "cl" and len(shape) != 4:
        pytest.skip("channels-last needs 4-d tensors")
    x, out, grad = _case(shape, torch.float32, device, seed=2, learn_sigma=True)
    out = out * 2.0  # x0 estimates beyond [-1, 1] somewhere: the clip matters
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(device)
    t = torch.linspace(0, 999, shape[0]).long()
    coef = step_coefficients(linear_vp(), t, mode="ddim", eta=0.6, device=device)
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(5)).to(device)

    def run(which):
        leaves = [v.detach().to(dtype).requires_grad_() for v in (x, out, grad, noise)]
        y = guided_step(*[_strided(v, how) for v in leaves[:2]], coef, mode="ddim", grad=_strided(leaves[2], how),
                        scale=1.9, clip=1.0, learn_sigma=True, noise=_strided(leaves[3], how),
                        ddim_guidance=ddim_guidance, backend=which)
        return y, torch.autograd.grad((y.float() * weight).sum(), leaves)

    (ours, ours_grads), (ref, ref_grads) = run(backend), run("reference")
    tol = tolerance(dtype) if dtype != torch.float32 else dict(atol=5e-5, rtol=1e-5)
    assert ours.dtype == dtype
    torch.testing.assert_close(ours, ref, **tol)
    assert not ref_grads[1][:, shape[1]:].any(), "DDIM ignores the learned-variance half"
    for got, want in zip(ours_grads, ref_grads):
        torch.testing.assert_close(got, want, **(tol if dtype != torch.float32 else dict(atol=1e-4, rtol=1e-4)))

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
    (lambda x, c: guided_step(x, x, c, mode="ddim", ddim_guidance="after"), r"'ddim_guidance' is 'after'"),
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
