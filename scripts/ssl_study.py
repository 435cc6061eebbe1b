"""Semi-supervised and positive-unlabeled noisy / DA classifiers on Fashion-MNIST, over several seeds.

Usage: python scripts/ssl_study.py [--seeds 0,1,2] [--runs runs/ssl] [--out docs/results/fmnist_ssl]
       [--parts ssl,pu,radius,weight] [--modes noisy,da] [-- more `diffaug-fast train` options, e.g. --epochs 4 for a longer budget]
Runs (or reuses finished) `diffaug-fast train --ssl|--pu ...` runs and writes mean ± std tables (Markdown +
JSON) and the temporal-consistency radius and weight curves (PNGs next to the tables).

Budget (the same for every row): 400 steps of 32 labeled (+ 32 unlabeled images at t and t' with the
consistency term) drawn from the first 12 800 training images, evaluated on 1 000 test images per t-bucket.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

BUDGET = ["--preset", "quick", "--train-limit", "12800", "--batch-size", "32", "--eval-limit", "1000"]
UPPER_BODY = "0,2,4,6"  # T-shirt/top, Pullover, Coat, Shirt


def run(folder: Path, args: list[str], extra: list[str]) -> dict:
    if not (folder / "metrics.json").exists():
        cmd = [sys.executable, "-m", "diffaug_fast.cli", "train", *args, *BUDGET, *extra, "--out", str(folder),
               *(["--resume"] if (folder / "checkpoint.pt").exists() else [])]
        print(" ".join(cmd), flush=True)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder.with_suffix(".log"), "w") as log:  # progress bars and output, beside the run folder
            subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    return json.loads((folder / "metrics.json").read_text())


def summary(rows: list[dict], pick) -> dict:
    values = [pick(r) for r in rows]
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def cell(s: dict, scale: float = 100.0, digits: int = 1) -> str:
    spread = f" ± {scale * s['std']:.{digits}f}" if len(s["values"]) > 1 else ""
    return f"{scale * s['mean']:.{digits}f}{spread}"


COLUMNS = {
    "low_t": lambda m: m["acc_per_t_bucket"][0]["acc"],
    "mean_t": lambda m: m["mean_acc_over_t"],
    "changed": lambda m: m["tc_disagreement"]["top_class_changed"],
}


def ssl_part(args, seeds, results, lines, modes=("noisy", "da")):
    lines += ["## Few labels per class (`--ssl`)", "",
              "Accuracy in % on test images diffused to t (t in 0–99, and the mean over 10 t-buckets); the last "
              "column is how often the top class changes between x_t and x_t' (same image and ε, |t − t'| ≤ 50).",
              "", "| labels / class | classifier | training | acc, t 0–99 | acc, mean over t | top class changed t↔t' |",
              "|---|---|---|---|---|---|"]
    for k in (10, 100):
        for mode in modes:
            for tc in ("off", "on"):
                rows = [run(Path(args.runs) / f"ssl-k{k}-{mode}-tc{tc}-s{s}",
                            ["--mode", mode, "--ssl", "--labels-per-class", str(k), "--consistency" if tc == "on" else "--no-consistency", "--seed",
                             str(s)], args.extra) for s in seeds[mode]]
                stats = {name: summary(rows, f) for name, f in COLUMNS.items()}
                results["ssl"][f"k{k}-{mode}-tc{tc}"] = stats
                lines.append(f"| {k} | {mode} ({len(rows)} seed{'s' if len(rows) > 1 else ''}) | "
                             f"{'labeled CE + temporal consistency' if tc == 'on' else 'labeled CE only'}"
                             f" | {cell(stats['low_t'])} | {cell(stats['mean_t'])} | {cell(stats['changed'])} |")
    lines.append("")


def pu_part(args, seeds, results, lines, modes=("noisy", "da")):
    lines += ["## Positive-unlabeled (`--pu --positive 0,2,4,6`: upper-body clothes, prior 0.4 known)", "",
              "100 labeled images of each positive class, everything else unlabeled. Accuracy in % and F1 of the "
              "positive class.", "",
              "| classifier | training | acc, t 0–99 | F1, t 0–99 | acc, mean over t | F1, mean over t |",
              "|---|---|---|---|---|---|"]
    for mode in modes:
        for tc in ("off", "on"):
            rows = [run(Path(args.runs) / f"pu-{mode}-tc{tc}-s{s}",
                        ["--mode", mode, "--pu", "--positive", UPPER_BODY, "--labels-per-class", "100",
                         "--consistency" if tc == "on" else "--no-consistency", "--seed", str(s)], args.extra) for s in seeds[mode]]
            stats = {"low_t": summary(rows, COLUMNS["low_t"]), "f1_low_t": summary(rows, lambda m: m["acc_per_t_bucket"][0]["f1"]),
                     "mean_t": summary(rows, COLUMNS["mean_t"]), "f1_mean_t": summary(rows, lambda m: m["mean_f1_over_t"])}
            results["pu"][f"{mode}-tc{tc}"] = stats
            lines.append(f"| {mode} ({len(rows)} seed{'s' if len(rows) > 1 else ''}) | {'nnPU + temporal consistency' if tc == 'on' else 'nnPU'} | "
                         f"{cell(stats['low_t'])} "
                         f"| {cell(stats['f1_low_t'], 1, 3)} | {cell(stats['mean_t'])} | {cell(stats['f1_mean_t'], 1, 3)} |")
    lines.append("")


SWEEPS = {  # part -> (train flag, values, the value the ssl part's "+ consistency" runs already used, name, x-axis)
    "radius": ("--tc-radius", (0, 10, 50, 150, 400), 50, "radius R", "consistency radius R (t' = t + U{-R..R})"),
    "weight": ("--tc-weight", (0.3, 1.0, 3.0, 10.0), 1.0, "weight", "consistency weight (log scale)"),
}


def sweep_part(args, seeds, results, lines, png: Path, part: str):
    """The noisy classifier with 10 labels per class and the consistency term, one setting swept over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    flag, values, reused, name, xlabel = SWEEPS[part]
    curve = {}
    for value in values:
        rows = [run(Path(args.runs) / (f"{part}-{value:g}-s{s}" if value != reused else f"ssl-k10-noisy-tcon-s{s}"),
                    ["--mode", "noisy", "--ssl", "--labels-per-class", "10", flag, f"{value:g}", "--seed", str(s)],
                    args.extra) for s in seeds["noisy"]]
        curve[value] = {col: summary(rows, COLUMNS[col]) for col in ("low_t", "mean_t", "changed")}
    baseline = results["ssl"].get("k10-noisy-tcoff")
    results[part] = {f"{v:g}": c for v, c in curve.items()}
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for key, label in (("mean_t", "mean over t"), ("low_t", "t in 0–99")):
        ax.errorbar(values, [100 * curve[v][key]["mean"] for v in values],
                    yerr=[100 * curve[v][key]["std"] for v in values], marker="o", capsize=3,
                    label=f"+ consistency, {label}")
        if baseline:
            ax.axhline(100 * baseline[key]["mean"], ls="--", lw=1, color=ax.lines[-1].get_color(),
                       label=f"labeled CE only, {label}")
    if part == "radius":  # R = 0 is on the axis: linear near 0, logarithmic beyond 10
        ax.set_xscale("symlog", linthresh=10)
    else:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("noisy classifier, 10 labels per class")
    ax.legend(fontsize=7)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    lines += [f"## Consistency {name} (noisy classifier, 10 labels per class)", "",
              f"| {name} | acc, t 0–99 | acc, mean over t | top class changed t↔t' |", "|---|---|---|---|"]
    if baseline:
        lines.append(f"| (labeled CE only) | {cell(baseline['low_t'])} | {cell(baseline['mean_t'])} | "
                     f"{cell(baseline['changed'])} |")
    lines += [f"| {v:g} | {cell(curve[v]['low_t'])} | {cell(curve[v]['mean_t'])} | {cell(curve[v]['changed'])} |"
              for v in values]
    lines += ["", f"![{part} curve]({png.name})", ""]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--da-seeds", default=None, help="seeds of the (slower) DA rows; default --seeds")
    parser.add_argument("--runs", default="runs/ssl")
    parser.add_argument("--out", default="docs/results/fmnist_ssl")
    parser.add_argument("--parts", default="ssl,pu,radius,weight")
    parser.add_argument("--modes", default="noisy,da", help="classifier rows of the ssl and pu parts (the sweeps are "
                        "noisy only); e.g. noisy for a longer budget where DA runs would take hours")
    parser.add_argument("extra", nargs="*", help="more `diffaug-fast train` options, after --")
    args = parser.parse_args()
    seeds = {"noisy": [int(s) for s in args.seeds.split(",")]}
    seeds["da"] = [int(s) for s in (args.da_seeds or args.seeds).split(",")]
    modes = tuple(m for m in ("noisy", "da") if m in args.modes.split(","))
    if not modes or set(args.modes.split(",")) - set(modes):
        parser.error(f"argument --modes: expected noisy, da or noisy,da, got {args.modes}")
    parts = args.parts.split(",")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = {"seeds": {m: seeds[m] for m in modes}, "budget": BUDGET, "extra_args": args.extra, "ssl": {}, "pu": {}}
    lines = [f"# Semi-supervised and positive-unlabeled noisy / DA classifiers (Fashion-MNIST, seeds {args.seeds}"
             f"{'; DA rows ' + args.da_seeds if args.da_seeds else ''})", "",
             "Every run: `diffaug-fast train " + " ".join(BUDGET + args.extra) + "`"
             + ("" if args.extra else " (400 steps)") + ", mean ± std over seeds.", ""]
    # the cheap noisy-classifier runs first, so that their rows are complete before the slow DA runs start
    if "ssl" in parts:
        ssl_part(args, seeds, {"ssl": {}}, [], modes=("noisy",))
    if "pu" in parts:
        pu_part(args, seeds, {"pu": {}}, [], modes=("noisy",))
    for part in SWEEPS:
        if part in parts:
            sweep_part(args, seeds, dict(results, ssl={}), [], out.parent / f"{out.name}_{part}.png", part)
    if "ssl" in parts:
        ssl_part(args, seeds, results, lines, modes)
    if "pu" in parts:
        pu_part(args, seeds, results, lines, modes)
    for part in SWEEPS:
        if part in parts:
            sweep_part(args, seeds, results, lines, out.parent / f"{out.name}_{part}.png", part)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
