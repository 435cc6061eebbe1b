"""The supervised losses of a clean classifier's step: cross-entropy on the clean images and their DiffAug copies,
and AugMix's Jensen–Shannon consistency between the clean image and two AugMix views of it."""
from __future__ import annotations

import torch
import torch.nn.functional as F

AUGMIX_JSD_WEIGHT = 12.0  # AugMix's and the official diffaugmix recipe's weight of the consistency term


def jensen_shannon(*logits: torch.Tensor) -> torch.Tensor:
    """Per-example Jensen–Shannon divergence (nats) of the softmax distributions of ``logits`` ([B, K] each):
    the mean of KL(p_k ‖ M), M the mixture. M is floored at 1e-7 before its log, as AugMix does, so a confident
    wrong view cannot make the term explode."""
    if len(logits) < 2:
        raise ValueError(f"jensen_shannon needs at least 2 distributions, got {len(logits)}")
    log_p = [F.log_softmax(z.to(torch.promote_types(z.dtype, torch.float32)), dim=1) for z in logits]
    log_m = torch.stack([lp.exp() for lp in log_p]).mean(0).clamp(1e-7, 1).log()
    return torch.stack([(lp.exp() * (lp - log_m)).sum(1) for lp in log_p]).mean(0)


def clean_classifier_loss(logits: torch.Tensor, y: torch.Tensor, *, clean: int, batch: int, world: int,
                          copies_share: bool, augmix_views: int = 0, jsd_weight: float = 0.0,
                          copy_weight: float = 1.0) -> torch.Tensor:
    """This rank's loss; its gradient, averaged over ``world`` ranks, is the global batch's.

    ``logits`` / ``y``: this rank's ``clean`` images, then ``augmix_views`` AugMix views of them (``clean`` each),
    then the DiffAug copies (``copies_share``: the first images' copies under --diffaug-fraction < 1; else one per
    clean image or none). Each clean image and each copy weighs 1 / ``batch`` in the cross-entropy (with a copy of
    every image this is the paper's CE(clean) + CE(DiffAug)), a copy times ``copy_weight``; the AugMix views enter
    only through the Jensen–Shannon term, weighted ``jsd_weight`` and averaged over the global batch (AugMix's loss)."""
    views_end = clean * (1 + augmix_views)
    per_example = F.cross_entropy(logits.float(), y, reduction="none")
    if not copies_share and not augmix_views and copy_weight == 1:
        # the loss as it always was: a mean over the batch, x2 with a copy of every image (bit-identical runs)
        ce = torch.cat([per_example[:clean], per_example[views_end:]])
        return ce.mean() * (2 if len(ce) > clean else 1)
    loss = world * (per_example[:clean].sum() + copy_weight * per_example[views_end:].sum()) / batch
    if augmix_views and jsd_weight:
        parts = logits[:views_end].split(clean)
        loss = loss + jsd_weight * world * jensen_shannon(*parts).sum() / batch
    return loss
