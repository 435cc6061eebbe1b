"""Out-of-distribution detection: offline OOD sets, scores (max softmax, energy, and their
DiffAug-Ensemble versions) and the usual detection metrics (AUROC, AUPR, FPR at 95 % TPR).

Convention: every score is "higher = more in-distribution", and in-distribution is the positive class.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from diffaug_fast import streams

OOD_SETS = ("digits", "uniform", "gaussian")  # plus any folder of images
# What each set is, wherever it is shown (reports, tables, study labels): `digits` is not MNIST but scikit-learn's
# bundled 1 797 handwritten 8x8 digits, upscaled bilinearly to the images' size.
OOD_LABELS = {"digits": "scikit-learn 8x8 digits (upscaled)", "uniform": "uniform noise", "gaussian": "Gaussian noise"}


def ood_label(name: str) -> str:
    """The words for an OOD set in reports: the built-in sets by what they are, a folder by its name."""
    return OOD_LABELS.get(name, name)


def ood_images(name: str, *, n: int = 2000, image_size: int = 28, channels: int = 1, seed: int = 0) -> torch.Tensor:
    """An OOD set in [-1, 1]: scikit-learn's bundled 8×8 digits upsampled, uniform or Gaussian noise, or a folder."""
    gen = streams.generator(seed, "ood")
    shape = (n, channels, image_size, image_size)
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = torch.from_numpy(load_digits().images).float().div(16.0)  # [1797, 8, 8], ink = 1 on 0 background
        x = F.interpolate(digits[:n, None], size=(image_size, image_size), mode="bilinear", align_corners=False)
        return x.clamp(0, 1).mul(2).sub(1).expand(-1, channels, -1, -1).contiguous()
    if name == "uniform":
        return torch.rand(shape, generator=gen) * 2 - 1
    if name == "gaussian":
        return (torch.randn(shape, generator=gen) * 0.5).clamp(-1, 1)
    from diffaug_fast.data import load_unlabeled_folder

    return load_unlabeled_folder(name, image_size=image_size, channels=channels, limit=n)


def msp(logits: torch.Tensor) -> torch.Tensor:
    """Maximum softmax probability (Hendrycks & Gimpel)."""
    return logits.float().softmax(-1).amax(-1)


def energy(logits: torch.Tensor) -> torch.Tensor:
    """Negative free energy logsumexp(logits) (Liu et al.): higher for in-distribution."""
    return torch.logsumexp(logits.float(), -1)


def ensemble_scores(logits_per_t: torch.Tensor) -> dict[str, torch.Tensor]:
    """DiffAug-Ensemble versions from logits [T, N, K]: MSP of the averaged softmax, mean energy over t."""
    return {"de_msp": logits_per_t.softmax(-1).mean(0).amax(-1), "de_energy": energy(logits_per_t).mean(0)}


def _as_numpy(v) -> np.ndarray:
    return v.detach().double().cpu().numpy() if torch.is_tensor(v) else np.asarray(v, dtype=np.float64)


def detection_metrics(score_in, score_out) -> dict[str, float]:
    """AUROC, AUPR (in-distribution positive) and FPR of OOD at the threshold keeping 95 % of in-distribution.

    scikit-learn's metrics, ties counted as one threshold; FPR@95 is read at the first threshold whose TPR
    reaches 0.95 on the full ROC curve (``drop_intermediate=False``, so no collinear point is skipped)."""
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    s_in, s_out = _as_numpy(score_in), _as_numpy(score_out)
    if len(s_in) == 0 or len(s_out) == 0:
        raise ValueError("detection_metrics needs in-distribution and OOD scores")
    scores = np.concatenate([s_in, s_out])
    labels = np.concatenate([np.ones(len(s_in)), np.zeros(len(s_out))])
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    return {"auroc": float(roc_auc_score(labels, scores)), "aupr": float(average_precision_score(labels, scores)),
            "fpr_at_95_tpr": float(fpr[np.searchsorted(tpr, 0.95, side="left")])}
