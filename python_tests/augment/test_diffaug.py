"""DiffAug and DiffAug-Ensemble against their definitions, on the embedded denoiser and real images."""
import pytest
import torch

import diffaug_fast
from diffaug_fast.augment import DiffAug, DiffAugEnsemble, diffuse_and_denoise
from diffaug_fast.models.classifiers import build_classifier
from diffaug_fast.data import load_fashion_mnist
from diffaug_fast.ops import denoise_epilogue, diffuse


@pytest.fixture(scope="module")
def denoiser():
    return diffaug_fast.pretrained("fmnist")


@pytest.fixture(scope="module")
def images():
    return load_fashion_mnist("test", limit=12)[0]


@pytest.mark.slow  # the shipped denoiser on real images
def test_diffuse_and_denoise_is_diffuse_then_network_then_epilogue(denoiser, images):
    t = torch.tensor([0, 5, 100, 250, 400, 499, 600, 999, 1, 2, 3, 700])
    got = diffuse_and_denoise(denoiser, images, t, seed=11, offset=123)
    a, s = denoiser.schedule.coefficients(t)
    with torch.no_grad():
        x_t = diffuse(images, a, s, seed=11, offset=123, backend="reference")
        out = denoiser.net(x_t, t)
        expect = denoise_epilogue(x_t, out, a, s, parametrization="eps", clip=True, backend="reference")
    torch.testing.assert_close(got, expect, atol=1e-4, rtol=1e-4)
    assert not got.is_inference() and got.abs().max() <= 1


@pytest.mark.slow  # the shipped denoiser on real images
def test_shards_with_offsets_equal_the_whole_batch(denoiser, images):
    t = torch.randint(0, 1000, (12,), generator=torch.Generator().manual_seed(0))
    whole = diffuse_and_denoise(denoiser, images, t, seed=5, offset=10)
    per_image = images[0].numel()
    parts = [diffuse_and_denoise(denoiser, images[i:j], t[i:j], seed=5, offset=10 + i * per_image)
             for i, j in ((0, 5), (5, 12))]
    # the network may pick other conv algorithms for other batch sizes: float-rounding differences only
    torch.testing.assert_close(torch.cat(parts), whole, atol=2e-4, rtol=1e-3)
    chunked = diffuse_and_denoise(denoiser, images, t, seed=5, offset=10, max_batch=5)
    torch.testing.assert_close(chunked, whole, atol=2e-4, rtol=1e-3)


@pytest.mark.slow  # the shipped denoiser on real images
def test_diffaug_module_is_deterministic_and_feeds_autograd(denoiser, images):
    a = DiffAug(denoiser, t_max=500, seed=3)
    b = DiffAug(denoiser, t_max=500, seed=3)
    first, second = a(images), a(images)
    assert torch.equal(first, b(images)) and torch.equal(second, b(images))
    assert not torch.equal(first, second)  # a new call draws new t's and noise
    assert int(a.calls) == 2 and int(a.offset) == 2 * images.numel()
    clf = build_classifier("resnet-small")
    clf(first).sum().backward()  # DiffAug output is an ordinary tensor for the classifier
    assert all(p.grad is not None for p in clf.parameters())


@pytest.mark.slow  # the shipped denoiser on real images
def test_diffaug_changes_images_more_with_larger_t(denoiser, images):
    dists = [float((diffuse_and_denoise(denoiser, images, torch.full((12,), t), seed=1) - images).square().mean())
             for t in (0, 200, 600)]
    assert dists[0] < 1e-3 < dists[1] < dists[2]


def test_diffaug_rejects_bad_ranges(denoiser):
    with pytest.raises(ValueError, match="t_min"):
        DiffAug(denoiser, t_min=10, t_max=5)
    with pytest.raises(ValueError, match="t_max"):
        DiffAug(denoiser, t_max=1000)
    with pytest.raises(ValueError, match="argument 't'"):
        diffuse_and_denoise(denoiser, torch.zeros(3, 1, 28, 28), torch.zeros(2, dtype=torch.long), seed=0)


@pytest.mark.slow  # the shipped denoiser on real images
def test_ensemble_batched_equals_one_call_per_t(denoiser, images):
    torch.manual_seed(0)
    clf = build_classifier("resnet-small").eval()
    ts = [0, 50, 300]
    de = DiffAugEnsemble(clf, denoiser, ts, seed=2, max_batch=7)  # chunks that straddle t-blocks
    per_t = de.probabilities_per_t(images, offset=40)
    n, per_image = len(images), images[0].numel()
    with torch.no_grad():
        for k, t in enumerate(ts):
            x_hat = diffuse_and_denoise(denoiser, images, torch.full((n,), t), seed=2, offset=40 + k * n * per_image)
            torch.testing.assert_close(per_t[k], torch.softmax(clf(x_hat), -1), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(de(images, offset=40), per_t.mean(0))
    assert torch.allclose(per_t.sum(-1), torch.ones(3, n))


def test_ensemble_rejects_timesteps_outside_the_schedule(denoiser):
    with pytest.raises(ValueError, match="timesteps"):
        DiffAugEnsemble(torch.nn.Identity(), denoiser, [0, 1000])
