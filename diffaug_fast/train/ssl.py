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

from diffaug_fast import streams

TC_TARGETS = ("lower", "higher", "both")  # which prediction is the (detached) target
TC_NOISE = ("same", "fresh")  # x_t and x_t' share ε, or draw their own


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def labeled_subset(labels: torch.Tensor, per_class: int, seed: int, classes=None) -> torch.Tensor:
    """Indices of ``per_class`` examples of each class (of ``classes``, default all), drawn with ``seed``."""
    if not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"argument 'labels_per_class' must be a positive integer, got {per_class!r}")
    gen = streams.generator(seed, "labeled_subset")
    classes = sorted(set(labels.tolist())) if classes is None else list(classes)
    chosen = []
    for c in classes:
        pool = torch.nonzero(labels == c).flatten()
        if len(pool) < per_class:
            raise ValueError(f"argument 'labels_per_class' is {per_class} but class {c} has only {len(pool)} "
                             "training images")
        chosen.append(pool[torch.randperm(len(pool), generator=gen)[:per_class]])
    return torch.cat(chosen).sort().values


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


def pu_targets(labels: torch.Tensor, positive) -> torch.Tensor:
    """Labels of a positive-unlabeled task: 1 for the ``positive`` classes, 0 for the rest."""
    return torch.isin(labels, torch.tensor(list(positive))).long()


def semi_supervised_loss(chunks: tuple, batch: dict, semi, *, step: int, prior: float | None) -> tuple:
    """(loss, stats) of one semi-supervised step from the logits of each part of ``batch`` (labeled, then
    unlabeled and partner when present): CE on labeled (SSL) or nnPU (PU), plus the ramped temporal-consistency
    KL on unlabeled pairs."""
    stats = {}
    if semi.pu:
        loss, risk = nnpu_risk(binary_score(chunks[0]), binary_score(chunks[1]), prior, loss=semi.pu_loss)
        stats.update(pu_risk=float(risk), acc=float((binary_score(chunks[0]) > 0).float().mean()))
    else:
        loss = F.cross_entropy(chunks[0], batch["y"])
        stats["acc"] = float((chunks[0].argmax(1) == batch["y"]).float().mean())
    if "pair" in batch:
        tc, kept = temporal_consistency(chunks[-2], chunks[-1], batch["unlabeled"][1], batch["pair"][1],
                                        target=semi.tc_target, threshold=semi.tc_threshold)
        loss = loss + semi.tc_weight * rampup(step, semi.tc_rampup) * tc
        stats.update(tc_kl=float(tc.detach()), tc_kept=float(kept.float().mean()))
    return loss, stats
