"""Semi-supervised and positive-unlabeled pieces for noisy / DA classifiers: which examples keep their
labels, the temporal-consistency loss across diffusion times, its ramp-up, and the nnPU risk.

Temporal consistency: a classifier of x_t should say the same about x_t and x_t' of the same clean image
when t' is near t. Each unlabeled image is diffused to t and to t' = clamp(t + Δ), Δ ~ U{-R, …, R}, and
the two predictions are pulled together with KL(p_target ‖ p_other), the target side detached. By default
the target is the prediction at the *smaller* t (less noise, more information), and both x_t and x_t'
use the same ε, so the pair differs only by the diffusion time — the network cannot satisfy the loss
by ignoring noise it has not seen.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

TC_TARGETS = ("lower", "higher", "both")  # which prediction is the (detached) target
TC_NOISE = ("same", "fresh")  # x_t and x_t' share ε, or draw their own


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def labeled_subset(labels: torch.Tensor, per_class: int, seed: int, classes=None) -> torch.Tensor:
    """Indices of ``per_class`` examples of each class (of ``classes``, default all), drawn with ``seed``."""
    if not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"argument 'labels_per_class' must be a positive integer, got {per_class!r}")
    gen = torch.Generator().manual_seed(seed * 7919 + 17)
    classes = sorted(set(labels.tolist())) if classes is None else list(classes)
    chosen = []
    for c in classes:
        pool = torch.nonzero(labels == c).flatten()
        if len(pool) < per_class:
            raise ValueError(f"argument 'labels_per_class' is {per_class} but class {c} has only {len(pool)} "
                             "training images")
        chosen.append(pool[torch.randperm(len(pool), generator=gen)[:per_class]])
    return torch.cat(chosen).sort().values


def partner_timesteps(t: torch.Tensor, radius: int, t_max: int, gen: torch.Generator) -> torch.Tensor:
    """t' = t + Δ with Δ uniform on {-radius, …, radius}, kept inside [0, t_max]."""
    if radius < 0:
        raise ValueError(f"argument 'tc_radius' must be >= 0, got {radius}")
    delta = torch.randint(-radius, radius + 1, t.shape, generator=gen)
    return (t + delta.to(t.device)).clamp_(0, t_max)


def temporal_consistency(logits_a: torch.Tensor, logits_b: torch.Tensor, t_a: torch.Tensor, t_b: torch.Tensor,
                         *, target: str = "lower", threshold: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean KL(p_target ‖ p_other) over the pairs whose target is confident enough; and that mask.

    ``target``: ``lower`` — the prediction at the smaller t is the target (ties: ``a``); ``higher`` — the
    one at the larger t; ``both`` — the symmetric sum of the two directions, each with its target detached.
    ``threshold``: pairs whose target's top probability is below it contribute nothing.
    """
    if target not in TC_TARGETS:
        raise ValueError(f"argument 'tc_target' is {target!r}; expected one of {', '.join(TC_TARGETS)}")
    log_a, log_b = F.log_softmax(_at_least_fp32(logits_a), -1), F.log_softmax(_at_least_fp32(logits_b), -1)

    def kl(log_target, log_other):  # KL(target ‖ other) per example, the target side detached
        log_target = log_target.detach()
        return (log_target.exp() * (log_target - log_other)).sum(-1)

    if target == "both":
        per_example = kl(log_a, log_b) + kl(log_b, log_a)
        confident = torch.maximum(log_a, log_b).detach().exp().amax(-1) >= threshold
    else:
        a_is_target = (t_a <= t_b) if target == "lower" else (t_a >= t_b)
        a_is_target = a_is_target.to(log_a.device).unsqueeze(-1)
        log_target = torch.where(a_is_target, log_a, log_b)
        log_other = torch.where(a_is_target, log_b, log_a)
        per_example = kl(log_target, log_other)
        confident = log_target.detach().exp().amax(-1) >= threshold
    mask = confident.float()
    return (per_example * mask).sum() / per_example.numel(), confident


def rampup(step: int, length: int) -> float:
    """The consistency weight's sigmoid-shaped ramp exp(-5 (1 - s/length)^2), 1 after ``length`` steps."""
    if length <= 0 or step >= length:
        return 1.0
    return math.exp(-5.0 * (1.0 - step / length) ** 2)


def binary_score(logits: torch.Tensor) -> torch.Tensor:
    """A two-logit classifier's score for "positive" (class 1): z1 − z0, so that p(positive) = sigmoid(score)."""
    if logits.shape[-1] != 2:
        raise ValueError(f"a positive-unlabeled classifier has 2 outputs, got {logits.shape[-1]}")
    return logits[..., 1] - logits[..., 0]


PU_LOSSES = ("logistic", "sigmoid")


def nnpu_risk(score_positive: torch.Tensor, score_unlabeled: torch.Tensor, prior: float, *, loss: str = "logistic",
              beta: float = 0.0, gamma: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative PU risk (Kiryo et al., 2017) with a margin loss ℓ(z, y): logistic log(1 + e^(−yz)) or
    sigmoid 1 / (1 + e^(yz)).

    Returns (the objective to back-propagate, the risk estimate). The negative-class risk estimated from
    unlabeled data, R_u⁻ − π R_p⁻, can go below zero when a flexible model overfits; then the objective
    is −γ (R_u⁻ − π R_p⁻), which pushes it back up instead of further down. The logistic loss is the
    default: the bounded sigmoid loss stops giving gradient once a score saturates, and with few labeled
    positives a noisy classifier's scores all saturate negative (that is the risk minimiser at large t).
    """
    if not 0.0 < prior < 1.0:
        raise ValueError(f"argument 'prior' must lie in (0, 1), got {prior}")
    if loss not in PU_LOSSES:
        raise ValueError(f"argument 'loss' is {loss!r}; expected one of {', '.join(PU_LOSSES)}")
    if len(score_positive) == 0 or len(score_unlabeled) == 0:
        raise ValueError("nnPU needs at least one labeled positive and one unlabeled example per batch")
    score_positive, score_unlabeled = _at_least_fp32(score_positive), _at_least_fp32(score_unlabeled)
    margin = F.softplus if loss == "logistic" else torch.sigmoid  # ℓ(z, +1) = margin(−z), ℓ(z, −1) = margin(z)
    risk_pos = margin(-score_positive).mean()  # R_p⁺: positives called negative
    risk_pos_as_neg = margin(score_positive).mean()  # R_p⁻
    risk_unl_as_neg = margin(score_unlabeled).mean()  # R_u⁻
    negative = risk_unl_as_neg - prior * risk_pos_as_neg
    risk = prior * risk_pos + negative.clamp(min=0.0)
    objective = -gamma * negative if negative.item() < -beta else prior * risk_pos + negative
    return objective, risk.detach()


def f1_score(pred: torch.Tensor, target: torch.Tensor) -> float:
    """F1 of the positive class (1) for 0/1 predictions and targets."""
    tp = int(((pred == 1) & (target == 1)).sum())
    fp = int(((pred == 1) & (target == 0)).sum())
    fn = int(((pred == 0) & (target == 1)).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


@torch.inference_mode()
def disagreement(model, denoiser, images: torch.Tensor, *, radius: int, seed: int = 0, batch: int = 500,
                 device="cpu") -> dict:
    """How often a noisy / DA classifier changes its mind between x_t and x_t' of the same image and ε
    (t uniform, t' within ``radius``): the fraction of different top classes and the mean symmetric KL."""
    from diffaug_fast.ops import diffuse

    model.eval()
    last = len(denoiser.schedule) - 1
    gen = torch.Generator().manual_seed(seed + 3)
    changed, sym_kl = 0, 0.0
    for start in range(0, len(images), batch):
        x0 = images[start:start + batch].to(device)
        t = torch.randint(0, last + 1, (len(x0),), generator=gen)
        t2 = partner_timesteps(t, radius, last, gen)
        logits = []
        for tt in (t.to(device), t2.to(device)):
            a, s = denoiser.schedule.coefficients(tt, device=device)
            x_t = diffuse(x0, a, s, seed=seed + 5000, offset=start * x0[0].numel())  # the same ε for t and t'
            logits.append(F.log_softmax(model(x_t, tt).float(), -1))
        changed += int((logits[0].argmax(1) != logits[1].argmax(1)).sum())
        p, q = logits[0].exp(), logits[1].exp()
        sym_kl += float(((p - q) * (logits[0] - logits[1])).sum())
    return {"top_class_changed": changed / len(images), "symmetric_kl": sym_kl / len(images), "radius": radius}
