"""Noisy vs denoising-assisted classifiers on Fashion-MNIST: accuracy per t-bucket, classifier-guided DDIM
samples scored with FID / IS / KID and a judge, and gradient alignment.

Usage: python scripts/guidance_study.py [--runs runs/guidance] [--seeds 0,1] [--da-seeds 0] [--epochs 4]
       [--scales 2,4,8] [--num 200] [--steps ddim25] [--out docs/results/fmnist_guidance]
Runs (or reuses) `diffaug-fast train --mode noisy|da`, `sample --class all`, `fidelity` and `gradients`
and writes a Markdown + JSON summary. Layout under --runs: noisy-S/, da-S/, sweep/<clf>-S-scaleX/,
sweep/unguided/, gradients/.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "diffaug_fast.cli"]


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
    out = runs / "sweep" / name
    if not (out / "fidelity.json").exists():
        _run(CLI + ["sample", "--num", str(args.num), "--steps", args.steps, "--out", str(out), *extra],
             out.with_suffix(".log"))
        subprocess.run(CLI + ["fidelity", "--samples", str(out / "samples.npz"), "--json", str(out / "fidelity.json")],
                       check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "fidelity.json").read_text())


def mean_std(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{scale * statistics.mean(values):.{digits}f}" + (f" ± {scale * std:.{digits}f}" if len(values) > 1 else "")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default="runs/guidance")
    parser.add_argument("--seeds", default="0,1", help="seeds of the noisy classifiers")
    parser.add_argument("--da-seeds", default=None, help="seeds of the (slower) DA classifiers; default --seeds")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--scales", default="2,4,8")
    parser.add_argument("--num", type=int, default=200)
    parser.add_argument("--steps", default="ddim25")
    parser.add_argument("--out", default="docs/results/fmnist_guidance")
    args = parser.parse_args()
    runs = Path(args.runs)
    seeds = {"noisy": [int(s) for s in args.seeds.split(",")]}
    seeds["da"] = [int(s) for s in (args.da_seeds or args.seeds).split(",")]
    metrics = {mode: [train(runs, mode, s, args.epochs) for s in seeds[mode]] for mode in ("noisy", "da")}

    lines = [f"# Noisy vs denoising-assisted classifiers (Fashion-MNIST, {args.epochs} epochs, embedded VP denoiser)", "",
             f"Accuracy (%) on 2 000 test images diffused to a t drawn inside each bucket; noisy seeds "
             f"{seeds['noisy']}, DA seeds {seeds['da']} (mean ± std where more than one).", "",
             "| t | noisy classifier | DA classifier (input fusion) |", "|---|---|---|"]
    buckets = metrics["noisy"][0]["acc_per_t_bucket"]
    for k, row in enumerate(buckets):
        cells = [mean_std([m["acc_per_t_bucket"][k]["acc"] for m in metrics[mode]]) for mode in ("noisy", "da")]
        lines.append(f"| {row['t_from']}–{row['t_to']} | " + " | ".join(cells) + " |")
    lines.append("| mean over t | " + " | ".join(mean_std([m["mean_acc_over_t"] for m in metrics[mode]])
                                              for mode in ("noisy", "da")) + " |")

    sweep = {"unguided": guided(runs, "unguided", [], args)}
    for mode in ("noisy", "da"):
        for scale in args.scales.split(","):
            seed = seeds[mode][0]
            sweep[f"{mode}-{scale}"] = guided(runs, f"{mode}-{seed}-scale{scale}",
                                              ["--classifier", str(runs / f"{mode}-{seed}"), "--class", "all",
                                               "--scale", scale], args)
    lines += ["", f"Guided {args.steps.upper()} samples, {args.num} per setting, classes 0–9 in turn (`--class all`), "
              "seed-{s} classifiers; FID / IS / KID against the 10 000 test images with the shipped "
              "`fmnist-classifier`'s features, which is also the judge.".replace("{s}", str(seeds["noisy"][0])), "",
              "| guidance | scale | FID ↓ | IS ↑ | KID ↓ | judge agrees with the requested class ↑ |", "|---|---|---|---|---|---|"]
    for key, r in sweep.items():
        mode, _, scale = key.partition("-")
        lines.append(f"| {mode} | {scale or 0} | {r['frechet_inception_distance']:.2f} | {r['inception_score_mean']:.2f} | "
                     f"{r['kernel_inception_distance_mean']:.4f} | "
                     + (f"{100 * r['judge_accuracy']:.1f} %" if "judge_accuracy" in r else "— (10 % by chance)") + " |")

    pictures = Path(args.out).parent.parent / "images" / "guidance"
    pictures.mkdir(parents=True, exist_ok=True)
    import numpy as np
    import torch
    from torchvision.utils import save_image

    for name in ["unguided"] + [f"{m}-{seeds[m][0]}-scale{sc}" for m in ("noisy", "da") for sc in args.scales.split(",")]:
        images = torch.from_numpy(np.load(runs / "sweep" / name / "samples.npz")["images"][:100]).float() / 255
        save_image(images, pictures / f"{name}.png", nrow=10, padding=1)  # --class all: column k is class k

    grads = runs / "gradients" / "gradient_alignment.json"
    if not grads.exists():
        _run(CLI + ["gradients", "--classifier", str(runs / f"noisy-{seeds['noisy'][0]}"), "--classifier",
                    str(runs / f"da-{seeds['da'][0]}"), "--images", "6", "--t", "100,300,500,700", "--out",
                    str(runs / "gradients")], runs / "gradients.log")
    alignment = json.loads(grads.read_text())
    lines += ["", "Mean cosine similarity between ∇ log p(y | x_t) and x0 − x_t (6 test images):", "",
              "| classifier | " + " | ".join(f"t = {t}" for t in next(iter(alignment.values()))) + " |",
              "|---|" + "---|" * len(next(iter(alignment.values())))]
    for name, per_t in alignment.items():
        lines.append(f"| {name} | " + " | ".join(f"{v:+.3f}" for v in per_t.values()) + " |")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"seeds": seeds, "epochs": args.epochs, "metrics": metrics,
                                                    "sweep": sweep, "alignment": alignment}, indent=2))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
