"""End-to-end throughput with the embedded Fashion-MNIST denoiser: sampler steps, DDIM-50 sampling,
DiffAug augmentation, DiffAug-Ensemble and a full DiffAug training step, each beside its baseline.

Run:  python -m pytest benchmarks/test_bench_models.py --benchmark-json=benchmarks/results/models-<machine>.json
      python benchmarks/report_models.py benchmarks/results/models-<machine>.json
Groups hold the implementations of one task; report_models.py prints images/s and ratios to the baseline.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from common import DEVICE, denoiser, sync, timesteps, train_images
from diffaug_fast.augment import DiffAugEnsemble, FastNet, diffuse_and_denoise
from diffaug_fast.models.classifiers import build_classifier
from diffaug_fast.data import load_fashion_mnist
from diffaug_fast.diffusion import step_coefficients
from diffaug_fast.ops import guided_step, reference
from diffaug_fast.diffusion.sampling import sample

AUG_BATCH = 128



def _run(benchmark, fn, *, rounds, images, group, impl, baseline=False):
    fn()  # warm up (and compile)
    sync()
    benchmark.group = group
    benchmark.extra_info.update(task=group, impl=impl, images=images, baseline=baseline, device=DEVICE)

    def call():
        fn()
        sync()

    benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=1)




# --------------------------------------------------------------------------------------------------------------
# The official DiffAug pattern: guided-diffusion's q_sample + p_sample in eager fp32, keeping only pred_xstart.


class OfficialDiffusion:
    """The arithmetic of guided-diffusion's GaussianDiffusion for one q_sample + p_sample, written out."""

    def __init__(self, schedule):
        ab = schedule.alphas_cumprod.numpy()
        ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), schedule.alphas_cumprod[:-1]]).numpy()
        betas = 1 - ab / ab_prev
        post_var = betas * (1 - ab_prev) / (1 - ab)
        self.arrays = {  # numpy arrays, gathered per call as guided-diffusion's _extract_into_tensor does
            "sqrt_ab": ab**0.5, "sqrt_1m_ab": (1 - ab) ** 0.5, "sqrt_recip_ab": ab**-0.5,
            "sqrt_recipm1_ab": (1 / ab - 1) ** 0.5, "coef1": betas * ab_prev**0.5 / (1 - ab),
            "coef2": (1 - ab_prev) * (1 - betas) ** 0.5 / (1 - ab),
            "post_log_var": np.log(np.append(post_var[1], post_var[1:]))}

    def extract(self, name, t, x):
        return torch.from_numpy(self.arrays[name]).to(x.device)[t].float().view(-1, *([1] * (x.dim() - 1)))

    @torch.no_grad()
    def diffaug(self, model, x0, t):
        noise = torch.randn_like(x0)
        x_t = self.extract("sqrt_ab", t, x0) * x0 + self.extract("sqrt_1m_ab", t, x0) * noise
        eps = model(x_t, t)
        pred_xstart = (self.extract("sqrt_recip_ab", t, x_t) * x_t
                       - self.extract("sqrt_recipm1_ab", t, x_t) * eps).clamp(-1, 1)
        mean = self.extract("coef1", t, x_t) * pred_xstart + self.extract("coef2", t, x_t) * x_t
        nonzero = (t != 0).float().view(-1, *([1] * (x_t.dim() - 1)))
        posterior_sample = mean + nonzero * torch.exp(0.5 * self.extract("post_log_var", t, x_t)) * torch.randn_like(x_t)
        del posterior_sample  # computed and thrown away, as DiffAug built on p_sample does
        return pred_xstart



@pytest.mark.parametrize("impl", ["official_p_sample_eager_fp32", "ours_eager", "ours_compiled"])
def test_diffaug_augmentation(benchmark, impl):
    den = denoiser()
    x0, t = train_images(AUG_BATCH), timesteps(AUG_BATCH)
    if impl == "official_p_sample_eager_fp32":
        official = OfficialDiffusion(den.schedule)
        fn = functools.partial(official.diffaug, den.net, x0, t)
    else:
        net = FastNet(den, compile=impl == "ours_compiled", amp="auto", device=DEVICE)
        fn = functools.partial(diffuse_and_denoise, den, x0, t, seed=0, net=net)
    _run(benchmark, fn, rounds=5, images=AUG_BATCH, group="DiffAug augmentation, batch 128", impl=impl,
         baseline=impl.startswith("official"))


# --------------------------------------------------------------------------------------------------------------
# DiffAug-Ensemble: 10 t's in one batched denoiser + classifier pass vs one call per t.


@pytest.mark.parametrize("impl", ["one_call_per_t", "batched"])
def test_diffaug_ensemble(benchmark, impl):
    den, n = denoiser(), 64
    torch.manual_seed(0)
    clf = build_classifier("resnet-small").to(DEVICE).eval()
    x0 = train_images(n)
    ts = list(range(0, 500, 50))
    if impl == "batched":
        de = DiffAugEnsemble(clf, den, ts, max_batch=n * len(ts))
        fn = functools.partial(de, x0)
    else:
        @torch.inference_mode()
        def fn():
            probs = 0
            for k, t in enumerate(ts):
                x_hat = diffuse_and_denoise(den, x0, torch.full((n,), t, device=DEVICE), seed=0,
                                            offset=k * x0.numel())
                probs = probs + torch.softmax(clf(x_hat), -1)
            return probs / len(ts)
    _run(benchmark, fn, rounds=3, images=n, group="DiffAug-Ensemble, 64 images x 10 t", impl=impl,
         baseline=impl == "one_call_per_t")


# --------------------------------------------------------------------------------------------------------------
# One full DiffAug training step (augment + forward/backward over clean + DiffAug + optimizer step).


def _train_step_fn(impl):
    den = denoiser()
    torch.manual_seed(0)
    clf = build_classifier("resnet-small").to(DEVICE)
    opt = torch.optim.SGD(clf.parameters(), lr=0.01, momentum=0.9)
    x0, t = train_images(AUG_BATCH), timesteps(AUG_BATCH)
    y = torch.zeros(2 * AUG_BATCH, dtype=torch.long, device=DEVICE)
    if impl == "eager_fp32_official_augmentation":
        official = OfficialDiffusion(den.schedule)

        def augment():
            return official.diffaug(den.net, x0, t)
        forward = clf
    else:
        net = FastNet(den, compile=True, amp="auto", device=DEVICE)
        clf = clf.to(memory_format=torch.channels_last)

        def augment():
            return diffuse_and_denoise(den, x0, t, seed=0, net=net)
        forward = torch.compile(clf) if DEVICE == "cuda" else clf

    def step():
        x = torch.cat([x0, augment()])
        loss = torch.nn.functional.cross_entropy(forward(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


@pytest.mark.parametrize("impl", ["eager_fp32_official_augmentation", "ours"])
def test_diffaug_train_step(benchmark, impl):
    _run(benchmark, _train_step_fn(impl), rounds=5, images=AUG_BATCH,
         group="DiffAug training step, batch 128 (+128 DiffAug)", impl=impl,
         baseline=impl.startswith("eager"))


# --------------------------------------------------------------------------------------------------------------
# Sampler steps: the fused guided_step op vs the eager reference vs diffusers' schedulers (unguided).

STEP_SHAPES = {"256x1x28x28": (256, 1, 28, 28), "16x3x256x256": (16, 3, 256, 256)}


@pytest.mark.parametrize("mode", ["ddpm", "ddim"])
@pytest.mark.parametrize("shape_name", list(STEP_SHAPES))
@pytest.mark.parametrize("impl", ["fused", "eager_reference", "diffusers"])
def test_sampler_step(benchmark, impl, shape_name, mode):
    diffusers = pytest.importorskip("diffusers")
    shape = STEP_SHAPES[shape_name]
    sched = denoiser().schedule
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    x = torch.randn(shape, device=DEVICE, generator=gen)
    eps = torch.randn(shape, device=DEVICE, generator=gen)
    t = 500
    index = torch.full((shape[0],), t, device=DEVICE)
    coef = step_coefficients(sched, index, mode=mode, device=DEVICE)
    if impl == "fused":
        fn = functools.partial(guided_step, x, eps, coef, mode=mode, seed=0, clip=True)
    elif impl == "eager_reference":
        fn = functools.partial(reference.guided_step, x, eps, None, None, coef, None, reference.STEP_MODES[mode],
                               0.0, 1.0, 0, 0)
    else:
        kwargs = dict(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True)
        if mode == "ddpm":
            scheduler = diffusers.DDPMScheduler(**kwargs)
            scheduler.set_timesteps(1000)

            def fn():
                return scheduler.step(eps, t, x, generator=gen).prev_sample
        else:
            scheduler = diffusers.DDIMScheduler(**kwargs)
            scheduler.set_timesteps(50)

            def fn():
                return scheduler.step(eps, t, x, eta=0.0).prev_sample
    _run(benchmark, fn, rounds=3 if impl == "eager_reference" else 20, images=shape[0],
         group=f"sampler step {mode} {shape_name}", impl=impl,
         baseline=impl == "diffusers")


@pytest.mark.parametrize("impl", ["eager", "compiled"])
def test_ddim50_sampling(benchmark, impl):
    den = denoiser()
    net = torch.compile(den.net) if impl == "compiled" else den.net
    n = 64

    def fn():
        return sample(lambda x, t: net(x, t), (n, 1, 28, 28), den.schedule, steps="ddim50", seed=0, device=DEVICE,
                      progress=False)
    _run(benchmark, fn, rounds=2, images=n, group="DDIM-50 sampling, 64 images", impl=impl, baseline=impl == "eager")


@functools.lru_cache(maxsize=None)
def _guide(kind):
    """An (untrained: speed does not depend on the weights) noisy or DA classifier of the embedded denoiser."""
    from diffaug_fast.models.noisy import build_noisy_classifier

    torch.manual_seed(0)
    return build_noisy_classifier(kind, denoiser()).to(DEVICE).eval()


@pytest.mark.parametrize("classifier", ["noisy", "da"])
@pytest.mark.parametrize("impl", ["eager_reference", "fused", "fused_compiled"])
def test_guided_ddim50_sampling(benchmark, impl, classifier):
    """Classifier-guided DDIM-50: the PyTorch reference ops vs the fused guided step (+ compiled UNet)."""
    from diffaug_fast.diffusion.sampling import classifier_guidance

    den, clf, n = denoiser(), _guide(classifier), 32
    net = torch.compile(den.net) if impl == "fused_compiled" else den.net
    index = den.schedule.timesteps.to(DEVICE)
    guidance = classifier_guidance(lambda x, t: clf(x, torch.searchsorted(index, t)),
                                   torch.arange(n, device=DEVICE) % 10)
    backend = "reference" if impl == "eager_reference" else None

    def fn():
        return sample(lambda x, t: net(x, t), (n, 1, 28, 28), den.schedule, steps="ddim50", seed=0, device=DEVICE,
                      guidance=guidance, scale=2.0, progress=False, backend=backend)
    _run(benchmark, fn, rounds=2, images=n, group=f"guided DDIM-50 ({classifier} classifier), {n} images", impl=impl,
         baseline=impl == "eager_reference")


@pytest.mark.parametrize("impl", ["tc_loss_only", "whole_ssl_step"])
def test_temporal_consistency_share_of_a_step(benchmark, impl, tmp_path):
    """Is a fused KL kernel worth it? The temporal-consistency loss (forward + backward on [B, 10] logits) next to
    a whole semi-supervised DA training step (labeled + two unlabeled diffuse/denoise passes, forward, backward)."""
    from diffaug_fast.config import train_config
    from diffaug_fast.train.classifier import ClassifierTrainer
    from diffaug_fast.train.ssl import temporal_consistency

    b = 64
    if impl == "tc_loss_only":
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(b, 10, generator=gen).to(DEVICE).requires_grad_(True)
        c = torch.randn(b, 10, generator=gen).to(DEVICE).requires_grad_(True)
        ta, tc = torch.randint(0, 1000, (b,), generator=gen), torch.randint(0, 1000, (b,), generator=gen)

        def fn():
            loss, _ = temporal_consistency(a, c, ta, tc)
            loss.backward()
    else:
        config = train_config("quick", mode="da", ssl=True, labels_per_class=10, batch_size=b, compile="off",
                              eval_limit=10, train_limit=1280)
        images, labels = train_images(1280).cpu(), load_fashion_mnist("train", limit=1280)[1]
        job = ClassifierTrainer(config, images, labels)

        def fn():
            job.train_step()
    _run(benchmark, fn, rounds=5, images=b, group="temporal consistency vs a semi-supervised DA step, batch 64",
         impl=impl, baseline=impl == "whole_ssl_step")
