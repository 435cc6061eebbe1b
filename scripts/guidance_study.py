"""Noisy vs denoising-assisted classifiers on Fashion-MNIST, over seeds: accuracy per t-bucket, classifier-guided
DDIM samples scored with FID / IS / KID (95 % bootstrap intervals) and a judge, and gradient alignment.

Usage: python scripts/guidance_study.py [--runs runs/guidance-3seeds] [--seeds 0,1,2] [--da-seeds 0,1,2]
       [--epochs 4] [--scales 2,4,8] [--num 2000] [--steps ddim25] [--sweep-seeds 0] [--images 200]
       [--out docs/results/fmnist_guidance] [--stage train|sweep|all]
Runs (or resumes, or reuses) `diffaug-fast train --mode noisy|da`, `sample --class all`, `fidelity` and
`gradients`, each into its own folder, so an interrupted study picks up at the first unfinished piece.
Layout under --runs: noisy-S/, da-S/, sweep/<mode>-S-scaleX/, sweep/unguided/, gradients/seed-S/.
`--stage train` stops after the classifiers (and their per-t-bucket table).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path

from study_common import CLI

MODES = {"noisy": "noisy classifier", "da": "DA classifier (input fusion)"}


def _run(cmd: list[str], log: Path) -> None:
    print(" ".join(cmd), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT)


def train(runs: Path, mode: str, seed: int, epochs: int) -> dict:
    run = runs / f"{mode}-{seed}"
    if not (run / "metrics.json").exists():
        _run(CLI + ["train", "--mode", mode, "--epochs", str(epochs), "--seed", str(seed), "--eval-limit", "2000",
                    "--out", str(run), *(["--resume"] if (run / "checkpoint.pt").exists() else [])],
             runs / f"{mode}-{seed}.log")
    return json.loads((run / "metrics.json").read_text())


def guided(runs: Path, name: str, extra: list[str], args) -> dict:
    """Samples of one setting and their fidelity (with bootstrap intervals), made once and reused."""
    out = runs / "sweep" / name
    if not (out / "samples.npz").exists():
        _run(CLI + ["sample", "--num", str(args.num), "--steps", args.steps, "--out", str(out), *extra],
             out.with_suffix(".log"))
    if not (out / "fidelity.json").exists():
        _run(CLI + ["fidelity", "--samples", str(out / "samples.npz"), "--json", str(out / "fidelity.json")],
             out.with_suffix(".fidelity.log"))
    return json.loads((out / "fidelity.json").read_text())


def mean_std(values: list[float], scale: float = 100.0, digits: int = 1, signed: bool = False) -> str:
    text = f"{scale * statistics.mean(values):{'+' if signed else ''}.{digits}f}"
    return text + (f" ± {scale * statistics.stdev(values):.{digits}f}" if len(values) > 1 else "")


def bucket_table(metrics: dict, seeds: dict) -> list[str]:
    lines = [f"Accuracy (%) on 2 000 test images diffused to a t drawn inside each bucket; noisy seeds "
             f"{seeds['noisy']}, DA seeds {seeds['da']}, mean ± std over seeds. The gap is paired by seed "
             "(DA − noisy of the same seed), over the seeds both have.", "",
             f"| t | {MODES['noisy']} | {MODES['da']} | paired gap (DA − noisy) | DA ahead on |", "|---|---|---|---|---|"]
    shared = [s for s in seeds["da"] if s in seeds["noisy"]]
    by_seed = {mode: dict(zip(seeds[mode], metrics[mode])) for mode in MODES}

    def row(name, get):
        cells = [mean_std([get(m) for m in metrics[mode]]) for mode in MODES]
        gaps = [get(by_seed["da"][s]) - get(by_seed["noisy"][s]) for s in shared]
        ahead = f"{sum(g > 0 for g in gaps)} of {len(gaps)} seeds" if gaps else "—"
        return f"| {name} | " + " | ".join(cells) + f" | {mean_std(gaps, digits=2, signed=True) if gaps else '—'} | {ahead} |"

    for k, bucket in enumerate(metrics["noisy"][0]["acc_per_t_bucket"]):
        lines.append(row(f"{bucket['t_from']}–{bucket['t_to']}", lambda m, k=k: m["acc_per_t_bucket"][k]["acc"]))
    lines.append(row("mean over t", lambda m: m["mean_acc_over_t"]))
    return lines


def bucket_plot(metrics: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for mode, label in MODES.items():
        acc = np.array([[b["acc"] for b in m["acc_per_t_bucket"]] for m in metrics[mode]]) * 100
        mids = [(b["t_from"] + b["t_to"]) / 2 for b in metrics[mode][0]["acc_per_t_bucket"]]
        ax.errorbar(mids, acc.mean(0), yerr=acc.std(0, ddof=1) if len(acc) > 1 else None, fmt="-o", capsize=3,
                    label=f"{label} ({len(acc)} seeds)")
    ax.set(xlabel="diffusion time t (bucket centre)", ylabel="accuracy on x_t (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def sweep_table(sweep: dict, args) -> list[str]:
    from scipy.stats import binomtest

    lines = [f"Guided {args.steps.upper()} samples, {args.num} per setting, classes 0–9 in turn (`--class all`); FID / "
             "IS / KID against the 10 000 test images with the shipped `fmnist-classifier`'s features, which is also "
             "the judge; [95 % bootstrap interval over 1 000 redraws of the samples] for FID and KID, Wilson interval "
             "for the judge.", "",
             "| guidance | scale | classifier seed | FID ↓ | KID × 1000 ↓ | IS ↑ | judge: requested class ↑ |",
             "|---|---|---|---|---|---|---|"]
    for (mode, scale, seed), r in sweep.items():
        fid = (f"{r['frechet_inception_distance']:.2f} [{r['frechet_inception_distance_low']:.2f}, "
               f"{r['frechet_inception_distance_high']:.2f}]")
        kid = (f"{1000 * r['kernel_inception_distance_mean']:.1f} [{1000 * r['kernel_inception_distance_low']:.1f}, "
               f"{1000 * r['kernel_inception_distance_high']:.1f}]")
        if "judge_accuracy" in r:
            hits = round(r["judge_accuracy"] * args.num)
            ci = binomtest(hits, args.num).proportion_ci(0.95, method="wilson")
            judge = f"{100 * r['judge_accuracy']:.1f} % [{100 * ci.low:.1f}, {100 * ci.high:.1f}]"
        else:
            judge = "— (10 % by chance)"
        lines.append(f"| {mode} | {scale} | {seed if seed is not None else '—'} | {fid} | {kid} | "
                     f"{r['inception_score_mean']:.2f} | {judge} |")
    return lines


def sweep_summary(sweep: dict) -> list[str]:
    """Per guidance and scale: mean ± std over the classifier seeds, and DA − noisy paired by seed (one table row
    per scale), so a claim about 'DA guides better' rests on every seed, not on one classifier."""
    seeds = sorted({s for (_, _, s) in sweep if s is not None})
    scales = list(dict.fromkeys(sc for (m, sc, _) in sweep if m != "unguided"))
    metrics = {"FID ↓": ("frechet_inception_distance", 1), "KID × 1000 ↓": ("kernel_inception_distance_mean", 1000),
               "IS ↑": ("inception_score_mean", 1), "judge % ↑": ("judge_accuracy", 100)}
    lines = [f"Mean ± std over the classifier seeds {seeds} (each seed's samples scored as above).", "",
             "| guidance | scale | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for mode in MODES:
        for scale in scales:
            cells = [mean_std([sweep[(mode, scale, s)][key] for s in seeds], scale=k, digits=2 if k == 1 else 1)
                     for key, k in metrics.values()]
            lines.append(f"| {mode} | {scale} | " + " | ".join(cells) + " |")
    lines += ["", "DA − noisy, paired by classifier seed (negative FID / KID = DA closer to the test set; "
              "'DA better' counts the seeds where it is).", "",
              "| scale | " + " | ".join(f"{name[:-2]} gap | DA better" for name in metrics) + " |",
              "|---|" + "---|---|" * len(metrics)]
    for scale in scales:
        cells = []
        for name, (key, k) in metrics.items():
            gaps = [sweep[("da", scale, s)][key] - sweep[("noisy", scale, s)][key] for s in seeds]
            better = sum((g < 0) if name.endswith("↓") else (g > 0) for g in gaps)
            cells.append(f"{mean_std(gaps, scale=k, digits=2, signed=True)} | {better} of {len(gaps)}")
        lines.append(f"| {scale} | " + " | ".join(cells) + " |")
    return lines


def alignment_table(alignment: dict, images: int) -> list[str]:
    seeds = sorted(alignment)
    ts = list(next(iter(alignment[seeds[0]].values())))
    lines = [f"Cosine similarity between ∇ log p(y | x_t) and x0 − x_t, averaged over {images} test images per "
             f"classifier; mean ± std over the classifier seeds {seeds} (each seed's DA and noisy classifiers see "
             "the same images and noise).", "",
             "| classifier | " + " | ".join(f"t = {t}" for t in ts) + " |", "|---|" + "---|" * len(ts)]
    for mode, label in MODES.items():
        per_seed = [next(v for k, v in alignment[s].items() if k.endswith(f"({mode})")) for s in seeds]
        lines.append(f"| {label} | " + " | ".join(mean_std([p[t] for p in per_seed], scale=1, digits=3, signed=True)
                                                  for t in ts) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default="runs/guidance-3seeds")
    parser.add_argument("--seeds", default="0,1,2", help="seeds of the noisy classifiers")
    parser.add_argument("--da-seeds", default=None, help="seeds of the (slower) DA classifiers; default --seeds")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--scales", default="2,4,8")
    parser.add_argument("--num", type=int, default=2000, help="guided samples per setting")
    parser.add_argument("--steps", default="ddim25")
    parser.add_argument("--sweep-seeds", default=None, help="classifier seeds that guide the sweep; default the first")
    parser.add_argument("--images", type=int, default=200, help="test images for the gradient alignment")
    parser.add_argument("--stage", choices=("train", "all"), default="all")
    parser.add_argument("--out", default="docs/results/fmnist_guidance")
    args = parser.parse_args()
    runs, out = Path(args.runs), Path(args.out)
    seeds = {"noisy": [int(s) for s in args.seeds.split(",")]}
    seeds["da"] = [int(s) for s in (args.da_seeds or args.seeds).split(",")]
    metrics = {mode: [train(runs, mode, s, args.epochs) for s in seeds[mode]] for mode in MODES}
    pictures = out.parent.parent / "images" / "guidance"
    pictures.mkdir(parents=True, exist_ok=True)
    bucket_plot(metrics, pictures / "acc_per_t_bucket.png")
    lines = [f"# Noisy vs denoising-assisted classifiers (Fashion-MNIST, {args.epochs} epochs, embedded VP denoiser)",
             "", *bucket_table(metrics, seeds), "", "![accuracy per t-bucket](../images/guidance/acc_per_t_bucket.png)"]
    result = {"seeds": seeds, "epochs": args.epochs, "metrics": metrics}
    if args.stage == "all":
        sweep_seeds = [int(s) for s in args.sweep_seeds.split(",")] if args.sweep_seeds else [seeds["noisy"][0]]
        sweep = {("unguided", 0, None): guided(runs, "unguided", [], args)}
        for seed in sweep_seeds:
            for mode in MODES:
                for scale in args.scales.split(","):
                    sweep[(mode, scale, seed)] = guided(runs, f"{mode}-{seed}-scale{scale}", [
                        "--classifier", str(runs / f"{mode}-{seed}"), "--class", "all", "--scale", scale], args)
        lines += ["", *sweep_table(sweep, args)]
        if len(sweep_seeds) > 1:
            lines += ["", *sweep_summary(sweep)]
        save_sample_grids(runs, list(sweep), pictures)
        alignment = {}
        shared = [s for s in seeds["da"] if s in seeds["noisy"]]
        for seed in shared:
            folder = runs / "gradients" / f"seed-{seed}"
            if not (folder / "gradient_alignment.json").exists():
                _run(CLI + ["gradients", "--classifier", str(runs / f"noisy-{seed}"), "--classifier",
                            str(runs / f"da-{seed}"), "--images", str(args.images), "--t", "100,300,500,700",
                            "--out", str(folder)], folder.with_suffix(".log"))
            alignment[seed] = json.loads((folder / "gradient_alignment.json").read_text())
        (pictures / "gradients.png").write_bytes((runs / "gradients" / f"seed-{shared[0]}" / "gradients.png").read_bytes())
        lines += ["", *alignment_table(alignment, args.images), "",
                  "![noisy vs DA gradients](../images/guidance/gradients.png)"]
        result.update({"num": args.num, "steps": args.steps, "images": args.images,
                       "sweep": [{"mode": m, "scale": sc, "seed": s, **r} for (m, sc, s), r in sweep.items()],
                       "alignment": alignment})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def save_sample_grids(runs: Path, settings: list, pictures: Path) -> None:
    """The first 100 samples of each setting as a 10 x 10 grid (--class all: column k is class k)."""
    import numpy as np
    import torch
    from torchvision.utils import save_image

    for mode, scale, seed in settings:
        name = "unguided" if mode == "unguided" else f"{mode}-{seed}-scale{scale}"
        images = torch.from_numpy(np.load(runs / "sweep" / name / "samples.npz")["images"][:100]).float() / 255
        save_image(images, pictures / f"{name}.png", nrow=10, padding=1)


if __name__ == "__main__":
    main()
