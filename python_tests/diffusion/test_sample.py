"""End-to-end sampling with exact models of Gaussian data: the sampler must reproduce the data law."""
import math

import pytest
import torch

from diffaug_fast.diffusion import linear_vp
from diffaug_fast.diffusion.sampling import classifier_guidance, sample


def gaussian_eps_model(schedule, mean, std):
    """The Bayes-optimal eps predictor for x0 ~ N(mean, std^2 I): E[eps | x_t]."""
    ab = schedule.alphas_cumprod

    def model(x, t):
        a = ab[t.cpu()].sqrt().float().view(-1, 1, 1, 1)
        s = (1 - ab[t.cpu()]).sqrt().float().view(-1, 1, 1, 1)
        return s * (x - a * mean) / (a * a * std * std + s * s)

    return model


@pytest.mark.parametrize("mode, steps, variance, std_tol", [
    ("ddim", None, "fixed_small", 0.01),  # the full chains; shorter ones carry discretization error (below)
    ("ddpm", None, "fixed_large", 0.01),
])
def test_sampler_reproduces_gaussian_data(mode, steps, variance, std_tol):
    sched = linear_vp()
    model = gaussian_eps_model(sched, mean=0.3, std=0.2)
    x = sample(model, (1000, 1, 2, 2), sched, steps=steps, mode=mode, variance=variance, clip=None, seed=1,
               progress=False)
    assert abs(x.mean().item() - 0.3) < 0.02
    assert abs(x.std().item() - 0.2) < std_tol


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_short_chains_under_disperse_and_converge_with_steps(eta):
    """With the exact eps of Gaussian data, fewer steps give a narrower law; more steps approach std 0.2."""
    sched = linear_vp()
    model = gaussian_eps_model(sched, mean=0.0, std=0.2)
    stds = [sample(model, (1000, 1, 2, 2), sched, steps=f"ddim{n}", mode="ddim", eta=eta, clip=None, seed=2,
                   progress=False).std().item() for n in (25, 250)]
    assert stds[0] < stds[1] < 0.2 and stds[1] > 0.18


def test_ddim_with_eta_one_on_the_full_chain_is_ddpm():
    sched = linear_vp(100)
    model = gaussian_eps_model(sched, mean=0.1, std=0.3)
    ddim = sample(model, (8, 1, 3, 3), sched, mode="ddim", eta=1.0, clip=1.0, seed=4, progress=False)
    ddpm = sample(model, (8, 1, 3, 3), sched, mode="ddpm", variance="fixed_small", clip=1.0, seed=4, progress=False)
    torch.testing.assert_close(ddim, ddpm, atol=1e-4, rtol=1e-4)


def test_same_seed_same_images_and_backends_agree():
    sched = linear_vp()
    model = gaussian_eps_model(sched, mean=0.0, std=0.5)
    a = sample(model, (3, 1, 4, 4), sched, steps="ddim10", seed=7, progress=False)
    b = sample(model, (3, 1, 4, 4), sched, steps="ddim10", seed=7, progress=False)
    c = sample(model, (3, 1, 4, 4), sched, steps="ddim10", seed=7, progress=False, backend="reference")
    d = sample(model, (3, 1, 4, 4), sched, steps="ddim10", seed=8, progress=False)
    assert torch.equal(a, b)
    torch.testing.assert_close(a, c, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(a, d)


@pytest.mark.parametrize("mode", ["ddpm", "ddim"])
def test_classifier_guidance_moves_samples_to_the_class(mode):
    """Data: two classes N(-0.5, 0.1^2) and N(+0.5, 0.1^2). The exact noisy classifier guides to class 1."""
    sched = linear_vp()
    ab = sched.alphas_cumprod
    centers, std = torch.tensor([-0.5, 0.5]), 0.1

    def mixture_eps(x, t):
        a = ab[t.cpu()].sqrt().float().view(-1, 1, 1, 1)
        s = (1 - ab[t.cpu()]).sqrt().float().view(-1, 1, 1, 1)
        var = a * a * std * std + s * s
        logits = classifier(x, t)
        w = logits.softmax(-1).view(-1, 2, 1, 1, 1)
        means = (a.unsqueeze(1) * centers.view(1, 2, 1, 1, 1))
        return s * (x - (w * means).sum(1)) / var

    def classifier(x, t):  # log p(x_t | y) up to a constant, summed over pixels
        a = ab[t.cpu()].sqrt().float().view(-1, 1)
        s = (1 - ab[t.cpu()]).sqrt().float().view(-1, 1)
        var = a * a * std * std + s * s
        flat = x.flatten(1)
        return torch.stack([-((flat - a * c) ** 2).sum(1, keepdim=True).squeeze(1) / (2 * var.squeeze(1))
                            for c in centers], dim=1)

    labels = torch.ones(400, dtype=torch.long)
    shape = (400, 1, 1, 1)
    free = sample(mixture_eps, shape, sched, steps="50", mode=mode, clip=None, seed=3, progress=False)
    guided = sample(mixture_eps, shape, sched, steps="50", mode=mode, clip=None, seed=3, progress=False,
                    guidance=classifier_guidance(classifier, labels), scale=3.0)
    frac_free = (free > 0).float().mean().item()
    frac_guided = (guided > 0).float().mean().item()
    assert 0.3 < frac_free < 0.7
    assert frac_guided > 0.95
    assert not math.isnan(guided.sum().item())


@pytest.mark.parametrize("mode, eta", [("ddpm", 0.0), ("ddim", 0.5), ("ddim", 0.0)])
def test_a_draw_in_batches_is_the_whole_draw(mode, eta):
    """Images first..first+n of a draw of `total` get exactly the whole draw's noise (x_T and every step's), so a
    draw made in batches of any size, or continued after a stop, is the same draw. The model acts per pixel, so
    the comparison is exact; odd batch sizes, and a guided draw with per-batch labels."""
    sched = linear_vp(200)
    model = gaussian_eps_model(sched, mean=0.1, std=0.4)
    guide = lambda labels: (lambda x, t: (labels.float() - 0.5).view(-1, 1, 1, 1) * torch.ones_like(x))  # noqa: E731
    labels = torch.tensor([0, 1, 1, 0, 1, 0, 0])
    kw = dict(steps="ddim8", mode=mode, eta=eta, variance="fixed_large", seed=3, progress=False, scale=0.5)
    whole = sample(model, (7, 1, 3, 5), sched, guidance=guide(labels), **kw)
    for size in (1, 3, 4, 7):
        parts = [sample(model, (min(size, 7 - f), 1, 3, 5), sched, guidance=guide(labels[f:f + size]), first=f,
                        total=7, **kw) for f in range(0, 7, size)]
        assert torch.equal(torch.cat(parts), whole), size
    # the place in the draw matters: the same batch at another position gets other noise
    moved = sample(model, (3, 1, 3, 5), sched, guidance=guide(labels[3:6]), first=2, total=7, **kw)
    assert not torch.allclose(moved, whole[3:6])


def test_a_batch_outside_its_draw_is_refused():
    sched = linear_vp(50)
    model = gaussian_eps_model(sched, mean=0.0, std=0.5)
    for first, total in ((-1, 4), (2, 4), (0, 2)):
        with pytest.raises(ValueError, match="not inside a draw of total"):
            sample(model, (3, 1, 2, 2), sched, steps="ddim2", first=first, total=total, progress=False)
