"""Op denoise_epilogue: parametrizations, learn_sigma views, clipping, mixed dtypes, gradients, compile."""
import pytest
import torch

from diffaug_fast.diffusion import linear_vp, predict_x0, q_sample, ve_geometric
from diffaug_fast.ops import denoise_epilogue, diffuse

from conftest import tolerance

PARAMS = ["eps", "v", "x0", "score"]


def _inputs(shape, dtype, device, seed=0, learn_sigma=False):
    g = torch.Generator().manual_seed(seed)
    xt = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    out_shape = (shape[0], 2 * shape[1]) + tuple(shape[2:]) if learn_sigma else shape
    out = torch.randn(out_shape, generator=g).to(device=device, dtype=dtype)
    a = (0.05 + torch.rand(shape[0], generator=g)).to(device)
    s = torch.rand(shape[0], generator=g).to(device)
    return xt, out, a, s


@pytest.mark.parametrize("param", PARAMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 5, 7, 9), (64, 1, 28, 28), (6, 10)], ids=str)
def test_values_match_reference(device_backend, param, dtype, shape):
    device, backend = device_backend
    xt, out, a, s = _inputs(shape, dtype, device)
    for clip in (None, 1.0):
        ours = denoise_epilogue(xt, out, a, s, parametrization=param, clip=clip, backend=backend)
        ref = denoise_epilogue(xt, out, a, s, parametrization=param, clip=clip, backend="reference")
        assert ours.dtype == dtype
        torch.testing.assert_close(ours, ref, **tolerance(dtype))
        if clip is not None:
            assert ours.abs().max() <= clip


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "cl"])
def test_learn_sigma_half_is_read_in_place(device_backend, memory_format):
    device, backend = device_backend
    xt, out, a, s = _inputs((4, 3, 6, 5), torch.float32, device, learn_sigma=True)
    xt = xt.contiguous(memory_format=memory_format)
    out = out.contiguous(memory_format=memory_format)
    ours = denoise_epilogue(xt, out, a, s, learn_sigma=True, backend=backend)
    expected = denoise_epilogue(xt, out[:, :3].contiguous(), a, s, backend="reference")
    torch.testing.assert_close(ours, expected)
    if memory_format == torch.channels_last:
        assert ours.is_contiguous(memory_format=torch.channels_last)


def test_mixed_precision_model_output(device_backend):
    """Under autocast the network output is bf16 while x_t stays fp32: no cast pass needed."""
    device, backend = device_backend
    xt, out, a, s = _inputs((5, 2, 7, 7), torch.float32, device)
    out16 = out.to(torch.bfloat16)
    ours = denoise_epilogue(xt, out16, a, s, backend=backend)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, denoise_epilogue(xt, out16.float(), a, s, backend="reference"))


def test_non_contiguous_inputs(device_backend):
    device, backend = device_backend
    xt, out, a, s = _inputs((4, 3, 6, 8), torch.float32, device)
    ours = denoise_epilogue(xt.transpose(2, 3), out.transpose(2, 3), a, s, parametrization="v", backend=backend)
    ref = denoise_epilogue(xt.transpose(2, 3), out.transpose(2, 3), a, s, parametrization="v", backend="reference")
    torch.testing.assert_close(ours, ref)


@pytest.mark.parametrize("param", PARAMS)
def test_recovers_x0_from_the_true_prediction(device_backend, param):
    """Diffuse with the fused op, build each parametrization's exact target, recover x0."""
    device, backend = device_backend
    for schedule in (linear_vp(), ve_geometric()):
        x0 = torch.rand(6, 1, 8, 8, device=device) * 2 - 1
        t = torch.tensor([0, 10, 200, 500, 800, 999], device=device)
        xt, eps = q_sample(schedule, x0, t, seed=5, return_noise=True, backend=backend)
        a, s = (c.view(-1, 1, 1, 1) for c in schedule.coefficients(t, device=device))
        target = {"eps": eps, "v": a * eps - s * x0, "x0": x0, "score": -eps / s}[param]
        got = predict_x0(schedule, xt, t, target, parametrization=param, backend=backend)
        torch.testing.assert_close(got, x0, atol=2e-3 if schedule.kind == "vp" else 5e-3, rtol=1e-3)


@pytest.mark.parametrize("param", PARAMS)
@pytest.mark.parametrize("clip", [None, 0.5])
def test_gradients_match_reference(device_backend, param, clip):
    device, backend = device_backend
    xt0, out0, a, s = _inputs((3, 2, 4, 4), torch.float32, device)
    grads = {}
    for name in (backend, "reference"):
        xt, out = xt0.clone().requires_grad_(), out0.clone().requires_grad_()
        y = denoise_epilogue(xt, out, a, s, parametrization=param, clip=clip, backend=name)
        (y * torch.linspace(-1, 1, y.numel(), device=device).view_as(y)).sum().backward()
        grads[name] = (xt.grad, out.grad)
    for ours, ref in zip(grads[backend], grads["reference"]):
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_torch_compile_fullgraph(device_backend):
    device, backend = device_backend
    xt, out, a, s = _inputs((4, 6, 8, 8), torch.float32, device)

    def f(xt, out):
        return denoise_epilogue(xt, out, a, s, learn_sigma=True, clip=1.0, backend=backend).square().mean()

    xt = xt[:, :3].contiguous()
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager" if backend == "triton" else "inductor")
    x = xt.clone().requires_grad_()
    value = compiled(x, out)
    value.backward()
    torch.testing.assert_close(value, f(xt, out))
    x_ref = xt.clone().requires_grad_()
    f(x_ref, out).backward()
    torch.testing.assert_close(x.grad, x_ref.grad)


def test_diffuse_then_epilogue_compiles_as_one_graph():
    xt0 = torch.randn(8, 1, 28, 28)
    a, s = torch.rand(8) + 0.1, torch.rand(8)

    def augment(x0, out):
        xt = diffuse(x0, a, s, seed=0)
        return denoise_epilogue(xt, out, a, s, clip=True)

    compiled = torch.compile(augment, fullgraph=True)
    torch.testing.assert_close(compiled(xt0, xt0), augment(xt0, xt0))
