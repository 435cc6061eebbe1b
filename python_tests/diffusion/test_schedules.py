"""Schedules against diffusers' DDPMScheduler / DDIMScheduler and against their own definitions."""
import math

import pytest
import torch

from diffaug_fast.diffusion import (cosine_vp, get_schedule, linear_vp, q_sample, respace, space_timesteps,
                                    step_coefficients, ve_geometric)
from diffaug_fast.diffusion.schedules import as_index_tensor

diffusers = pytest.importorskip("diffusers")


@pytest.mark.parametrize("ours, name", [(linear_vp(), "linear"), (cosine_vp(), "squaredcos_cap_v2")])
def test_alphas_cumprod_match_diffusers(ours, name):
    theirs = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=name)
    torch.testing.assert_close(ours.alphas_cumprod, theirs.alphas_cumprod.double(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ours.betas, theirs.betas.double(), atol=1e-6, rtol=1e-4)


def test_q_sample_matches_diffusers_add_noise(device_backend):
    device, backend = device_backend
    theirs = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    x0 = torch.randn(6, 1, 8, 8)
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    expected = theirs.add_noise(x0, noise, t)
    got = q_sample(linear_vp(), x0.to(device), t, noise=noise.to(device), backend=backend).cpu()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_in_kernel_noise_has_the_marginal_of_diffusers_add_noise():
    """Same x0 and t: our x_t and diffusers' (with torch.randn) have the same mean and std per example."""
    theirs = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    x0 = torch.linspace(-1, 1, 20000).repeat(4, 1)
    t = torch.tensor([10, 300, 600, 900])
    ours = q_sample(cosine_vp(), x0, t, seed=1)
    ref = theirs.add_noise(x0, torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)), t)
    torch.testing.assert_close(ours.mean(1), ref.mean(1), atol=0.03, rtol=0)
    torch.testing.assert_close(ours.std(1), ref.std(1), atol=0.03, rtol=0.02)


@pytest.mark.parametrize("steps", [10, 50, 100, 250])
def test_ddim_respacing_matches_diffusers_timesteps(steps):
    theirs = diffusers.DDIMScheduler(num_train_timesteps=1000)
    theirs.set_timesteps(steps)
    assert space_timesteps(1000, f"ddim{steps}") == sorted(theirs.timesteps.tolist())
    sched = respace(linear_vp(), f"ddim{steps}")
    torch.testing.assert_close(sched.alphas_cumprod,
                               theirs.alphas_cumprod.double()[sorted(theirs.timesteps.tolist())], atol=1e-6, rtol=1e-5)


def test_respaced_betas_keep_the_marginals():
    full = linear_vp()
    sched = respace(full, "25")
    assert len(sched) == 25 and sched.timesteps[0] == 0 and sched.timesteps[-1] == 999
    # the respaced chain's betas compose to the same alphabar at each kept step
    torch.testing.assert_close(torch.cumprod(1 - sched.betas, 0), full.alphas_cumprod[sched.timesteps])
    assert space_timesteps(100, "10,15,20")[:3] == [0, 4, 7] and len(space_timesteps(100, "10,15,20")) == 45


def test_linear_schedule_scales_with_length():
    short = linear_vp(100)
    assert math.isclose(float(short.betas[0]), 1e-3, rel_tol=1e-9)
    assert math.isclose(float(short.betas[-1]), 0.2, rel_tol=1e-9)


def test_ve_geometric_sigmas():
    ve = ve_geometric(1000, 0.01, 50.0)
    assert torch.all(ve.signal == 1)
    assert math.isclose(float(ve.sigmas[0]), 0.01) and math.isclose(float(ve.sigmas[-1]), 50.0)
    ratios = ve.sigmas[1:] / ve.sigmas[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, (5000.0) ** (1 / 999)))


@pytest.mark.parametrize("name", ["linear", "cosine", "ve"])
def test_continuous_t_interpolates_and_hits_grid(name):
    sched = get_schedule(name)
    ints = torch.tensor([0, 1, 17, 500, 999])
    a_i, s_i = sched.coefficients(ints)
    a_f, s_f = sched.coefficients(ints.double())
    torch.testing.assert_close(a_f, a_i)
    torch.testing.assert_close(s_f, s_i)
    fine = torch.linspace(0, 999, 5000)
    a, s = sched.coefficients(fine)
    snr = (a / s) ** 2
    assert torch.all(snr[1:] <= snr[:-1] * (1 + 1e-5))  # noise only grows with t
    if sched.kind == "vp":
        torch.testing.assert_close(a**2 + s**2, torch.ones_like(a))


@pytest.mark.parametrize("bad", [torch.tensor([-1]), torch.tensor([1000]), torch.tensor([float("nan")]),
                                 torch.tensor([999.5])])
def test_t_out_of_range_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"argument 't' must lie in \[0, 999\]"):
        linear_vp().coefficients(bad)


def test_as_index_tensor_is_shared_by_coefficients_and_steps():
    """One checker of timesteps: numbers, lists and tensors become a checked 1-D tensor, integer stays integer."""
    assert as_index_tensor(3, 10, None).tolist() == [3]
    assert as_index_tensor([1, 2], 10, None).dtype == torch.int64
    assert as_index_tensor(torch.tensor([0.5]), 10, None).is_floating_point()
    with pytest.raises(ValueError, match=r"must be 1-D"):
        as_index_tensor(torch.zeros(2, 2), 10, None)
    with pytest.raises(ValueError, match=r"argument 't' must lie in \[0, 9\]"):
        step_coefficients(linear_vp(10), [10])
