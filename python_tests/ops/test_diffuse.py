"""Op diffuse: every fast backend against the reference (values, gradients, layouts, dtypes), and compile."""
import pytest
import torch

from diffaug_fast.ops import diffuse

from conftest import tolerance

# 256x1x28x28 is slow without a GPU: Triton's interpreter takes ~5 s a case on CPU
SHAPES = [(1, 1, 1, 1), (3, 5, 7, 9), pytest.param((256, 1, 28, 28), marks=pytest.mark.slow), (2, 3, 17, 13), (7, 33),
          (1, 2, 3, 4, 5)]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _inputs(shape, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    a = torch.rand(shape[0], generator=g).to(device)
    s = torch.rand(shape[0], generator=g).to(device)
    return x0, a, s


def _both(x0, a, s, backend, **kw):
    ours = diffuse(x0, a, s, seed=31, offset=5, backend=backend, **kw)
    ref = diffuse(x0, a, s, seed=31, offset=5, backend="reference", **kw)
    return ours, ref


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_values_match_reference(device_backend, shape, dtype):
    device, backend = device_backend
    x0, a, s = _inputs(shape, dtype, device)
    (xt, eps), (xt_ref, eps_ref) = _both(x0, a, s, backend, return_noise=True)
    assert xt.dtype == dtype and eps.dtype == dtype and xt.shape == x0.shape
    torch.testing.assert_close(xt, xt_ref, **tolerance(dtype))
    torch.testing.assert_close(eps, eps_ref, **tolerance(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_channels_last_kept_and_correct(device_backend, dtype):
    device, backend = device_backend
    x0, a, s = _inputs((4, 3, 9, 7), dtype, device)
    x0 = x0.contiguous(memory_format=torch.channels_last)
    (xt, eps), (xt_ref, eps_ref) = _both(x0, a, s, backend, return_noise=True)
    assert xt.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(xt, xt_ref, **tolerance(dtype))
    torch.testing.assert_close(eps, eps_ref, **tolerance(dtype))


@pytest.mark.parametrize("make_view", [
    lambda t: t.transpose(2, 3),                # permuted strides
    lambda t: t[:, :, ::2],                      # stepped slice
    lambda t: t[1:],                             # storage offset
], ids=["transposed", "stepped", "offset"])
def test_non_contiguous_inputs(device_backend, make_view):
    device, backend = device_backend
    base, a, s = _inputs((5, 3, 8, 6), torch.float32, device)
    x0 = make_view(base)
    a, s = a[: x0.shape[0]], s[: x0.shape[0]]
    ours, ref = _both(x0, a, s, backend)
    torch.testing.assert_close(ours, ref, **tolerance(torch.float32))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_given_noise_including_a_channel_slice(device_backend, dtype):
    device, backend = device_backend
    x0, a, s = _inputs((3, 2, 5, 5), dtype, device)
    wide = torch.randn(3, 4, 5, 5, device=device, dtype=dtype)
    noise = wide[:, :2]  # a learn_sigma-style half: read through strides
    xt, eps = diffuse(x0, a, s, noise=noise, return_noise=True, backend=backend, seed=0)
    assert eps is noise
    expected = a.view(-1, 1, 1, 1) * x0.float() + s.view(-1, 1, 1, 1) * noise.float()
    torch.testing.assert_close(xt.float(), expected, **tolerance(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_gradients_match_reference(device_backend, dtype):
    device, backend = device_backend
    x0, a, s = _inputs((3, 2, 4, 5), dtype, device)
    noise = torch.randn_like(x0)
    grads = {}
    for name in (backend, "reference"):
        x = x0.clone().requires_grad_()
        n = noise.clone().requires_grad_()
        out = diffuse(x, a, s, noise=n, backend=name, seed=0)
        (out.float() * torch.linspace(-1, 1, out.numel(), device=device).view_as(out)).sum().backward()
        grads[name] = (x.grad, n.grad)
    for ours, ref in zip(grads[backend], grads["reference"]):
        torch.testing.assert_close(ours, ref, **tolerance(dtype))


def test_gradient_through_in_kernel_noise(device_backend):
    device, backend = device_backend
    x0, a, s = _inputs((4, 1, 6, 6), torch.float64 if backend == "reference" else torch.float32, device)
    x = x0.clone().requires_grad_()
    diffuse(x, a, s, seed=3, backend=backend).sum().backward()
    torch.testing.assert_close(x.grad, a.view(-1, 1, 1, 1).expand_as(x0).to(x.grad.dtype))


def test_batch_of_zero(device_backend):
    device, backend = device_backend
    x0 = torch.empty(0, 1, 4, 4, device=device)
    xt, eps = diffuse(x0, torch.empty(0, device=device), torch.empty(0, device=device), seed=0,
                      return_noise=True, backend=backend)
    assert xt.shape == x0.shape and eps.shape == x0.shape


def test_scalar_coefficients_broadcast(device_backend):
    device, backend = device_backend
    x0 = torch.randn(3, 4, device=device)
    torch.testing.assert_close(diffuse(x0, 0.5, 0.0, seed=0, backend=backend), 0.5 * x0)


def test_seed_none_uses_torch_generator(device_backend):
    device, backend = device_backend
    x0 = torch.zeros(2, 50, device=device)
    torch.manual_seed(0)
    first = diffuse(x0, 1.0, 1.0, backend=backend)
    torch.manual_seed(0)
    torch.testing.assert_close(diffuse(x0, 1.0, 1.0, backend=backend), first)
    assert not torch.equal(diffuse(x0, 1.0, 1.0, backend=backend), first)


def test_torch_compile_fullgraph(device_backend):
    device, backend = device_backend
    x0, a, s = _inputs((4, 3, 8, 8), torch.float32, device)

    def step(x, a, s):
        xt, eps = diffuse(x, a, s, seed=11, offset=0, return_noise=True, backend=backend)
        return (xt * 2 - eps).sum(dim=(1, 2, 3))

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager" if backend == "triton" else "inductor")
    x = x0.clone().requires_grad_()
    out = compiled(x, a, s)
    out.sum().backward()
    torch.testing.assert_close(out, step(x0, a, s), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x.grad, 2 * a.view(-1, 1, 1, 1).expand_as(x0))
