"""eval.md and the pictures of a ``diffaug-fast eval`` run."""
from __future__ import annotations

from pathlib import Path

from diffaug_fast.eval.plots import figure
from diffaug_fast.eval.robustness.certify import RADII
from diffaug_fast.eval.robustness.corruptions import SEVERITIES
from diffaug_fast.eval.robustness.ood import ood_label


def _pct(v) -> str:
    return f"{100 * v:.1f}"


def _subset(result: dict) -> str:
    """The test images the suites saw (evaluations before the subsets were class-stratified: the first N)."""
    return result.get("eval_subset") or f"{result['images']} test images"


def write_eval_report(result: dict, out: Path) -> Path:
    lines = [f"# Robustness evaluation of `{result['run']}`", "",
             f"{_subset(result)}; clean accuracy {_pct(result['clean_acc'])} %"
             + (f", with DiffAug-Ensemble {_pct(result['clean_de_acc'])} %" if "clean_de_acc" in result else "")
             + ".", ""]
    corr = result.get("corruptions")
    if corr:
        de = "mean_de_acc" in corr
        lines += ["## Corruptions (accuracy %, mean over 5 severities)", "",
                  "| corruption | plain |" + (" DiffAug-Ensemble |" if de else ""), "|---|---|" + ("---|" if de else "")]
        for name, per_sev in corr["per_corruption"].items():
            plain = sum(r["acc"] for r in per_sev.values()) / len(per_sev)
            cells = [_pct(plain)] + ([_pct(sum(r["de_acc"] for r in per_sev.values()) / len(per_sev))] if de else [])
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append(f"| **mean** | **{_pct(corr['mean_acc'])}** |" + (f" **{_pct(corr['mean_de_acc'])}** |" if de else ""))
        if "mce" in corr:
            lines += ["", f"mCE relative to {corr['baseline']}: {100 * corr['mce']:.1f}"
                      + (f" (with DiffAug-Ensemble {100 * corr['de_mce']:.1f})" if "de_mce" in corr else "")]
        lines += ["", "![accuracy vs severity](acc_vs_severity.png)", ""]
        with figure(out / "acc_vs_severity.png", figsize=(5, 3.4)) as ax:
            ax.plot(SEVERITIES, [100 * v for v in corr["acc_per_severity"]], marker="o", label="plain")
            if de:
                ax.plot(SEVERITIES, [100 * v for v in corr["de_acc_per_severity"]], marker="o", label="DiffAug-Ensemble")
            ax.set_xlabel("severity")
            ax.set_ylabel("accuracy (%), mean over corruptions")
            ax.set_xticks(list(SEVERITIES))
    ood = result.get("ood")
    if ood:
        lines += ["## OOD detection (in-distribution = test set)", "", "| OOD set | score | AUROC | AUPR | FPR@95%TPR |",
                  "|---|---|---|---|---|"]
        for name, per_score in ood.items():
            for score, m in per_score.items():
                lines.append(f"| {ood_label(name)} | {score} | {_pct(m['auroc'])} | {_pct(m['aupr'])} | {_pct(m['fpr_at_95_tpr'])} |")
        lines.append("")
    cert = result.get("certify")
    if cert:
        lines += ["## Certified accuracy (randomized smoothing, one-shot diffusion denoiser)", "",
                  *([f"Certified: {result['certify_subset']}.", ""] if "certify_subset" in result else []),
                  "| σ | t | " + " | ".join(f"r = {r}" for r in RADII) + " | abstain | largest certifiable r |",
                  "|---|---|" + "---|" * (len(RADII) + 2)]
        for sigma, c in cert.items():
            lines.append(f"| {sigma} | {c['timestep']} | " + " | ".join(_pct(c["certified_acc"][str(r)]) for r in RADII)
                         + f" | {_pct(c['abstain'])} | {c['max_radius_possible']:.2f} |")
        lines += ["", "![certified accuracy](certified_accuracy.png)", ""]
        with figure(out / "certified_accuracy.png", figsize=(5, 3.4)) as ax:
            for sigma, c in cert.items():
                ax.step(RADII, [100 * c["certified_acc"][str(r)] for r in RADII], where="post", label=f"σ = {sigma}")
            ax.set_xlabel("L2 radius ([0, 1] pixel units)")
            ax.set_ylabel("certified accuracy (%)")
    path = out / "eval.md"
    path.write_text("\n".join(lines) + "\n")
    return path
