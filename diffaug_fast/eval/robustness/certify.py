"""Certified accuracy by randomized smoothing (Cohen, Rosenfeld & Kolter, 2019), with a one-shot diffusion
denoiser in front of the classifier (diffusion denoised smoothing, Carlini et al., 2023).

Units: σ and radii are in [0, 1] pixel units, the literature's convention. The package's images live in
[-1, 1], so the Gaussian noise added there has standard deviation 2σ, and a radius R in [−1, 1] units is
R / 2 in [0, 1] units — which is what σ Φ⁻¹(p_A) with the [0, 1]-unit σ gives directly.
"""
from __future__ import annotations

from typing import Callable

import torch

from diffaug_fast import streams
from scipy.stats import beta, norm
from tqdm.auto import tqdm

RADII = (0.0, 0.25, 0.5, 0.75, 1.0)
ABSTAIN = -1


def clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    """One-sided (1 − alpha) Clopper–Pearson lower confidence bound of a binomial proportion."""
    if successes <= 0:
        return 0.0
    return float(beta.ppf(alpha, successes, trials - successes + 1))


def _counts(classify, x: torch.Tensor, num: int, sigma_model: float, num_classes: int, batch: int,
            gen: torch.Generator) -> torch.Tensor:
    counts = torch.zeros(num_classes, dtype=torch.long)
    remaining = num
    while remaining > 0:
        k = min(batch, remaining)
        noise = torch.randn((k, *x.shape), generator=gen).to(x) * sigma_model
        counts += torch.bincount(classify(x.unsqueeze(0) + noise).cpu(), minlength=num_classes)[:num_classes]
        remaining -= k
    return counts


@torch.inference_mode()
def certify(classify: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, *, sigma: float,
            num_classes: int, n0: int = 10, n: int = 100, alpha: float = 0.001, batch: int = 200, seed: int = 0,
            first_index: int = 0, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Cohen et al.'s CERTIFY for each image: (predicted class or −1 for abstain, certified L2 radius).

    ``classify(x_noisy) -> class indices`` is the base classifier on noisy images in [-1, 1] units; the
    noise added here has std 2σ (σ in [0, 1] units). n0 samples pick the class, n fresh samples bound its
    probability from below at confidence 1 − alpha; radius = σ Φ⁻¹(p_A) when p_A > 1/2. Image i's noise is
    its own stream (``first_index + i``), so certifying a set in pieces gives the same answers as in one go.
    """
    if sigma <= 0 or n0 < 1 or n < 1 or not 0 < alpha < 1:
        raise ValueError(f"certify: need sigma > 0, n0 >= 1, n >= 1 and 0 < alpha < 1; got sigma={sigma}, "
                         f"n0={n0}, n={n}, alpha={alpha}")
    preds, radii = [], []
    for i, x in enumerate(tqdm(images, desc=f"certify σ={sigma}", disable=not progress, unit="img")):
        gen = streams.generator(seed, "certify", first_index + i)
        guess = int(_counts(classify, x, n0, 2 * sigma, num_classes, batch, gen).argmax())
        count = int(_counts(classify, x, n, 2 * sigma, num_classes, batch, gen)[guess])
        p_lower = clopper_pearson_lower(count, n, alpha)
        if p_lower > 0.5:
            preds.append(guess)
            radii.append(sigma * float(norm.ppf(p_lower)))
        else:
            preds.append(ABSTAIN)
            radii.append(0.0)
    return torch.tensor(preds), torch.tensor(radii)


def certified_accuracy(preds: torch.Tensor, radii: torch.Tensor, labels: torch.Tensor, radius: float) -> float:
    """Fraction of images predicted correctly with a certified radius of at least ``radius``."""
    return float(((preds == labels) & (radii >= radius)).float().mean())


def timestep_for_sigma(schedule, sigma: float) -> int:
    """The grid index t whose noise-to-signal ratio s_t / a_t is closest to 2σ (σ in [0, 1] units)."""
    a, s = schedule.coefficients(torch.arange(len(schedule)))
    return int(((s / a) - 2 * sigma).abs().argmin())


def denoised_classifier(classifier, denoiser, sigma: float, *, max_batch: int = 500):
    """Base classifier for smoothing: x + 2σ·ε  →  x_t = a_t (x + 2σ·ε) with s_t/a_t = 2σ  →  one denoiser
    call x̂0(x_t, t)  →  the (clean-image) classifier's class."""
    t = timestep_for_sigma(denoiser.schedule, sigma)
    a, _ = denoiser.schedule.coefficients(torch.tensor([t]))

    weights = denoiser.parameters() if isinstance(denoiser, torch.nn.Module) else iter(())
    device = next(weights, torch.empty(0)).device  # where the denoiser runs; the noisy images may be elsewhere

    @torch.inference_mode()
    def classify(x_noisy: torch.Tensor) -> torch.Tensor:
        out = []
        for start in range(0, len(x_noisy), max_batch):
            chunk = x_noisy[start:start + max_batch].to(device)
            tt = torch.full((len(chunk),), t, device=device, dtype=torch.long)
            x0_hat = denoiser(chunk * a.to(chunk), tt)
            out.append(classifier(x0_hat).argmax(-1).to(x_noisy.device))
        return torch.cat(out)

    classify.timestep = t
    return classify
