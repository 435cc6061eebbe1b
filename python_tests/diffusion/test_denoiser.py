"""Denoiser: network + schedule + parametrization -> x0_hat, checked with exact networks for Gaussian data."""
import pytest
import torch
from torch import nn

from diffaug_fast.diffusion import Denoiser, linear_vp, q_sample, respace, ve_geometric

MEAN, STD = 0.2, 0.3


class ExactGaussianNet(nn.Module):
    """Bayes-optimal prediction for x0 ~ N(MEAN, STD^2 I) in any parametrization."""

    def __init__(self, schedule, parametrization, condition="timestep", learn_sigma=False):
        super().__init__()
        self.schedule, self.parametrization, self.condition, self.learn_sigma = \
            schedule, parametrization, condition, learn_sigma

    def forward(self, x, cond):
        if self.condition == "sigma":  # VE: a = 1, s = sigma
            s = cond.view(-1, 1, 1, 1)
            a = torch.ones_like(s)
        else:
            index = torch.searchsorted(self.schedule.timesteps, cond.cpu())
            a = self.schedule.signal[index].float().view(-1, 1, 1, 1)
            s = self.schedule.noise[index].float().view(-1, 1, 1, 1)
        var = a * a * STD**2 + s * s
        x0 = MEAN + a * STD**2 * (x - a * MEAN) / var  # E[x0 | x_t]
        eps = (x - a * x0) / s
        out = {"eps": eps, "x0": x0, "v": a * eps - s * x0, "score": -eps / s}[self.parametrization]
        return torch.cat([out, torch.zeros_like(out)], 1) if self.learn_sigma else out


@pytest.mark.parametrize("parametrization", ["eps", "x0", "v", "score"])
@pytest.mark.parametrize("schedule", [linear_vp(), respace(linear_vp(), "ddim50")], ids=["full", "respaced"])
def test_every_parametrization_gives_the_posterior_mean(parametrization, schedule):
    net = ExactGaussianNet(schedule, parametrization)
    den = Denoiser(net, schedule, parametrization=parametrization, clip=None)
    x0 = MEAN + STD * torch.randn(6, 1, 5, 5)
    t = torch.linspace(0, len(schedule) - 1, 6).long()
    xt = q_sample(schedule, x0, t, seed=0)
    a, s = (c.view(-1, 1, 1, 1) for c in schedule.coefficients(t))
    expected = MEAN + a * STD**2 * (xt - a * MEAN) / (a * a * STD**2 + s * s)
    torch.testing.assert_close(den(xt, t), expected, atol=2e-4, rtol=1e-3)


def test_ve_score_network_conditioned_on_sigma_and_learn_sigma():
    sched = ve_geometric(100)
    net = ExactGaussianNet(sched, "score", condition="sigma")
    den = Denoiser(net, sched, parametrization="score", condition="sigma", clip=None)
    x0 = MEAN + STD * torch.randn(4, 1, 3, 3)
    t = torch.tensor([0, 30, 60, 99])
    xt = q_sample(sched, x0, t, seed=1)
    s = sched.coefficients(t)[1].view(-1, 1, 1, 1)
    torch.testing.assert_close(den(xt, t), MEAN + STD**2 * (xt - MEAN) / (STD**2 + s * s), atol=1e-4, rtol=1e-3)
    vp = linear_vp()
    wide = Denoiser(ExactGaussianNet(vp, "eps", learn_sigma=True), vp, learn_sigma=True, clip=None)
    narrow = Denoiser(ExactGaussianNet(vp, "eps"), vp, clip=None)
    torch.testing.assert_close(wide(xt, t * 10), narrow(xt, t * 10))


def test_clear_errors():
    vp = linear_vp()
    with pytest.raises(ValueError, match="'parametrization' is 'eps2'"):
        Denoiser(nn.Identity(), vp, parametrization="eps2")
    with pytest.raises(ValueError, match="v-parametrization is defined for VP"):
        Denoiser(nn.Identity(), ve_geometric(), parametrization="v")

    class Wrong(nn.Module):
        def forward(self, x, t):
            return torch.cat([x, x], 1)

    with pytest.raises(ValueError, match=r"the network returned shape \[2, 2, 4, 4\].*must return \[2, 1, 4, 4\]"):
        Denoiser(Wrong(), vp)(torch.zeros(2, 1, 4, 4), torch.tensor([1, 2]))


@pytest.mark.slow  # torch.compile with Inductor: seconds, more with a cold cache
def test_compiles_with_the_network():
    vp = linear_vp()
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 1, 3, padding=1))
    den = Denoiser(lambda_net(net), vp, clip=True)
    x, t = torch.randn(4, 1, 8, 8), torch.tensor([1, 10, 100, 999])
    torch.testing.assert_close(torch.compile(den, fullgraph=True)(x, t), den(x, t), atol=1e-5, rtol=1e-5)


def lambda_net(net):
    class TimeIgnoring(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x, t):
            return self.net(x)

    return TimeIgnoring()
