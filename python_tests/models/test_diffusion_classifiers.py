"""Noisy and denoising-assisted classifiers: what they see, both fusions, both gradient modes."""
import pytest
import torch

import diffaug_fast
from diffaug_fast.models.noisy import (DAClassifier, NoisyClassifier, TimeResNet, build_noisy_classifier,
                                                timestep_embedding)


@pytest.fixture(scope="module")
def denoiser():
    return diffaug_fast.pretrained("fmnist")


def _batch(n=3):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 28, 28, generator=g), torch.tensor([5, 300, 900][:n])


def test_timestep_embedding_shapes_and_values():
    e = timestep_embedding(torch.tensor([0, 10]), 7)
    assert e.shape == (2, 7)
    torch.testing.assert_close(e[0, :3], torch.ones(3))  # cos(0)
    assert float(e[0, 3:6].abs().max()) == 0.0 and e[:, 6].abs().max() == 0  # sin(0) and the odd pad


def test_input_fusion_feeds_scaled_xt_and_x0hat(denoiser):
    torch.manual_seed(0)
    clf = build_noisy_classifier("da", denoiser, widths=(8, 16, 16))
    x, t = _batch()
    with torch.no_grad():
        x0 = denoiser(x, t)
        expected = clf.net(torch.cat([x, x0], 1), t)  # VP: c_t = 1
        torch.testing.assert_close(clf(x, t), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(clf(x, t, x0_hat=x0), expected, atol=1e-5, rtol=1e-5)
    assert not any(k.startswith("denoiser") for k in clf.state_dict())  # the frozen denoiser is not saved


def test_feature_fusion_and_gradients(denoiser):
    torch.manual_seed(0)
    full = build_noisy_classifier("da", denoiser, fusion="feature", widths=(8, 16, 16))
    stop = DAClassifier(full.net, denoiser, fusion="feature", gradient="stop")
    stop.gate = full.gate
    x, t = _batch()
    y = torch.tensor([0, 1, 2])

    def grad(model):
        xg = x.clone().requires_grad_(True)
        torch.log_softmax(model(xg, t), -1)[torch.arange(3), y].sum().backward()
        return xg.grad

    g_full, g_stop = grad(full), grad(stop)
    with torch.no_grad():
        torch.testing.assert_close(full(x, t), stop(x, t))  # same function ...
    assert not torch.allclose(g_full, g_stop, atol=1e-6)  # ... but the full gradient also flows through x0_hat
    # chain rule: full = (direct part through x_t) + J_denoiser^T (part through x0_hat)
    x0 = denoiser(x, t).detach().requires_grad_(True)
    xd = x.clone().requires_grad_(True)
    torch.log_softmax(full(xd, t, x0_hat=x0), -1)[torch.arange(3), y].sum().backward()
    xv = x.clone().requires_grad_(True)
    through_denoiser = torch.autograd.grad(denoiser(xv, t), xv, grad_outputs=x0.grad)[0]
    torch.testing.assert_close(g_full, xd.grad + through_denoiser, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(g_stop, xd.grad, atol=1e-6, rtol=1e-4)


def test_noisy_classifier_ignores_the_denoiser():
    clf = build_noisy_classifier("noisy", widths=(8, 16, 16))
    x, t = _batch()
    assert isinstance(clf, NoisyClassifier) and isinstance(clf.net, TimeResNet)
    assert clf(x, t).shape == (3, 10)


def test_bad_arguments(denoiser):
    with pytest.raises(ValueError, match="fusion"):
        DAClassifier(TimeResNet(), denoiser, fusion="both")
    with pytest.raises(ValueError, match="needs the denoiser"):
        build_noisy_classifier("da")
    with pytest.raises(ValueError, match="'kind'"):
        build_noisy_classifier("clean")
