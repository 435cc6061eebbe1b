"""Op dual_fusion (the DA classifier's input / feature fusion): every backend against the reference and
against plain torch.cat / arithmetic; values, gradients, dtypes, layouts, odd sizes, compile."""
import pytest
import torch

from diffaug_fast.ops import concat_inputs, dual_fusion, gated_fusion

from conftest import tolerance

SHAPES = [(1, 1, 1, 1), (3, 5, 7, 9), (64, 1, 28, 28), (6, 10), (2, 3, 4, 5, 6), (0, 3, 4, 4)]


def _inputs(shape, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    z = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    wt = torch.rand(shape[0], shape[1], generator=g).to(device)
    w0 = torch.rand(shape[0], shape[1], generator=g).to(device)
    return x, z, wt, w0


def _plain(x, z, wt, w0, concat):
    shape = tuple(wt.shape) + (1,) * (x.dim() - 2)
    a, b = wt.view(shape) * x.float(), w0.view(shape) * z.float()
    return (torch.cat([a, b], 1) if concat else a + b).to(x.dtype)


@pytest.mark.parametrize("concat", [True, False], ids=["concat", "sum"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_values_match_reference_and_plain_torch(device_backend, concat, dtype, shape):
    device, backend = device_backend
    x, z, wt, w0 = _inputs(shape, dtype, device)
    ours = dual_fusion(x, z, wt, w0, concat=concat, backend=backend)
    ref = dual_fusion(x, z, wt, w0, concat=concat, backend="reference")
    expected_shape = (shape[0], shape[1] * (2 if concat else 1)) + tuple(shape[2:])
    assert ours.shape == expected_shape and ours.dtype == dtype
    torch.testing.assert_close(ours, ref, **tolerance(dtype))
    torch.testing.assert_close(ref, _plain(x, z, wt, w0, concat), **tolerance(dtype))


@pytest.mark.parametrize("concat", [True, False], ids=["concat", "sum"])
def test_channels_last_is_kept_and_strided_inputs_work(device_backend, concat):
    device, backend = device_backend
    x, z, wt, w0 = _inputs((4, 3, 6, 5), torch.float32, device)
    xc, zc = x.contiguous(memory_format=torch.channels_last), z.contiguous(memory_format=torch.channels_last)
    ours = dual_fusion(xc, zc, wt, w0, concat=concat, backend=backend)
    assert ours.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(ours, _plain(x, z, wt, w0, concat))
    # mixed layouts, a transposed view and a channel slice of a bigger tensor
    big = torch.randn(4, 6, 6, 5, device=device)
    for a, b in ((xc, z), (x.transpose(2, 3), z.transpose(2, 3)), (big[:, :3], big[:, 3:])):
        got = dual_fusion(a, b, wt, w0, concat=concat, backend=backend)
        torch.testing.assert_close(got, _plain(a, b, wt, w0, concat))


def test_weight_forms_and_helpers(device_backend):
    device, backend = device_backend
    x, z, _, _ = _inputs((5, 2, 3, 3), torch.float32, device)
    s_t = torch.linspace(0.5, 1.5, 5, device=device)
    torch.testing.assert_close(concat_inputs(x, z, s_t, 2.0, backend=backend),
                               torch.cat([s_t.view(-1, 1, 1, 1) * x, 2 * z], 1))
    gate = torch.rand(5, 2, device=device)
    torch.testing.assert_close(gated_fusion(x, z, gate, backend=backend),
                               gate.view(5, 2, 1, 1) * x + (1 - gate.view(5, 2, 1, 1)) * z)


@pytest.mark.parametrize("concat", [True, False], ids=["concat", "sum"])
@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (7, 9)], ids=str)
def test_gradients_match_reference(device_backend, concat, shape):
    device, backend = device_backend
    x, z, wt, w0 = _inputs(shape, torch.float32, device)
    leaves = [t.clone().requires_grad_(True) for t in (x, z, wt, w0)]
    ref_leaves = [t.clone().requires_grad_(True) for t in (x, z, wt, w0)]
    cot = torch.randn(dual_fusion(x, z, wt, w0, concat=concat, backend="reference").shape, device=device)
    (dual_fusion(*leaves, concat=concat, backend=backend) * cot).sum().backward()
    (_plain(*ref_leaves, concat) * cot).sum().backward()
    for ours, ref in zip(leaves, ref_leaves):
        torch.testing.assert_close(ours.grad, ref.grad, atol=1e-5, rtol=1e-5)


def test_autograd_formula_against_finite_differences():
    """The registered backward formula (the default backend's) against central differences of the reference."""
    x, z, wt, w0 = _inputs((2, 3, 2, 2), torch.float32, "cpu")
    for concat in (True, False):
        leaves = [t.float().requires_grad_(True) for t in (x, z, wt, w0)]
        out = dual_fusion(*leaves, concat=concat)
        cot = torch.randn_like(out)
        grads = torch.autograd.grad((out * cot).sum(), leaves)
        eps = 1e-3
        for k, leaf in enumerate(leaves):
            flat = leaf.detach().clone().view(-1)
            for j in range(0, flat.numel(), max(1, flat.numel() // 5)):
                bumped = [t.detach().clone() for t in leaves]
                bumped[k].view(-1)[j] += eps
                plus = (dual_fusion(*bumped, concat=concat, backend="reference") * cot).sum()
                bumped[k].view(-1)[j] -= 2 * eps
                minus = (dual_fusion(*bumped, concat=concat, backend="reference") * cot).sum()
                assert abs(float((plus - minus) / (2 * eps)) - float(grads[k].view(-1)[j])) < 2e-2


@pytest.mark.parametrize("concat", [True, False], ids=["concat", "sum"])
def test_compile_fullgraph_forward_and_backward(device_backend, concat):
    device, backend = device_backend
    x, z, wt, w0 = _inputs((4, 2, 5, 5), torch.float32, device)

    def f(a, b, u, v):
        return dual_fusion(a, b, u, v, concat=concat, backend=backend).square().sum()

    compiled = torch.compile(f, fullgraph=True)
    leaves = [t.clone().requires_grad_(True) for t in (x, z, wt, w0)]
    compiled(*leaves).backward()
    eager = [t.clone().requires_grad_(True) for t in (x, z, wt, w0)]
    f(*eager).backward()
    for a, b in zip(leaves, eager):
        torch.testing.assert_close(a.grad, b.grad)


def test_bad_arguments_are_named():
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="'x0' has shape"):
        dual_fusion(x, x[:1], 1.0, 1.0, concat=True)
    with pytest.raises(ValueError, match="'w_t' has shape"):
        dual_fusion(x, x, torch.ones(3), 1.0, concat=True)
    with pytest.raises(ValueError, match="'x_t' must be"):
        dual_fusion(torch.randn(4), torch.randn(4), 1.0, 1.0, concat=True)
    with pytest.raises(TypeError, match="'gate'"):
        gated_fusion(x, x, "half")
