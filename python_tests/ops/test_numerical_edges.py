"""Numerical edges: the ends of the chain (t = 0, T − 1), σ tiny and huge, and half precision where ᾱ → 0 makes
x̂0 = (x_t − s·ε̂) / a overflow unless the fused epilogue computes in float32 and clips before casting."""
import pytest
import torch

from diffaug_fast.data import load_fashion_mnist
from diffaug_fast.diffusion import cosine_vp, linear_vp, step_coefficients
from diffaug_fast.ops import denoise_epilogue, guided_step


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("a_value", [1e-4, 1e-3, 2e-2])
def test_half_precision_epilogue_near_alpha_zero_is_finite_and_matches_fp32(device_backend, dtype, a_value):
    device, backend = device_backend
    gen = torch.Generator().manual_seed(0)
    x_t = torch.randn(6, 1, 8, 8, generator=gen)
    eps = torch.randn(6, 1, 8, 8, generator=gen)
    a = torch.full((6,), a_value)
    s = (1 - a**2).sqrt()
    # unclipped, (x_t - s*eps)/a reaches ~1e4-1e5: beyond fp16's 65504 for a = 1e-4
    for clip in (True, 1.5):
        got = denoise_epilogue(x_t.to(device, dtype), eps.to(device, dtype), a.to(device), s.to(device),
                               parametrization="eps", clip=clip, backend=backend).float().cpu()
        bound = 1.0 if clip is True else clip
        want = ((x_t.to(dtype).float() - s.view(-1, 1, 1, 1) * eps.to(dtype).float())
                / a.view(-1, 1, 1, 1)).clamp(-bound, bound)
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("schedule", [linear_vp(), cosine_vp()], ids=["linear", "cosine"])
@pytest.mark.parametrize("mode, ddim_guidance", [("ddpm", "guided_diffusion"), ("ddim", "guided_diffusion"),
                                                  ("ddim", "clip_after_shift")])
def test_steps_at_both_ends_of_the_chain_in_half_precision(device_backend, schedule, mode, ddim_guidance):
    device, backend = device_backend
    for t in (0, len(schedule) - 1):
        coef = step_coefficients(schedule, torch.full((4,), t), mode=mode, device=device)
        x = torch.randn(4, 1, 8, 8).to(device, torch.float16)
        eps = torch.randn(4, 1, 8, 8).to(device, torch.float16)
        out = guided_step(x, eps, coef, mode=mode, grad=torch.ones_like(x), scale=2.0, clip=True, seed=1,
                          ddim_guidance=ddim_guidance, backend=backend)
        ref = guided_step(x, eps, coef, mode=mode, grad=torch.ones_like(x), scale=2.0, clip=True, seed=1,
                          ddim_guidance=ddim_guidance, backend="reference")
        assert torch.isfinite(out).all(), (t, mode)
        torch.testing.assert_close(out.float(), ref.float(), atol=2e-2, rtol=2e-2)


def test_ve_denoiser_at_sigma_min_and_max():
    from diffaug_fast import pretrained

    den = pretrained("fmnist-ve")
    x0, _ = load_fashion_mnist("test", limit=16)
    sigmas = den.schedule.sigmas
    assert float(sigmas[0]) == pytest.approx(0.01, rel=1e-4) and float(sigmas[-1]) == pytest.approx(50.0, rel=1e-4)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        tiny = den(x0 + 0.01 * torch.randn(x0.shape, generator=gen), torch.zeros(16, dtype=torch.long))
        huge = den(x0 + 50.0 * torch.randn(x0.shape, generator=gen), torch.full((16,), 999))
    assert float((tiny - x0).pow(2).mean()) < 1e-3  # σ = 0.01: x̂0 is (almost) the image itself
    assert torch.isfinite(huge).all() and huge.abs().max() <= 1.0  # σ = 50: finite, clipped to the data range
