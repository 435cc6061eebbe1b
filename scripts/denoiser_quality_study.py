"""Classifier accuracy against denoiser quality: DiffAug runs with each of a ladder of denoisers.

Usage: python scripts/denoiser_quality_study.py DENOISER [DENOISER ...] [--seeds 0,1,2] [--runs runs/quality]
       [--out docs/results/denoiser_quality] [--report-limit 2000] [--corruptions] [-- more `diffaug-fast train` options]
DENOISER: anything `--denoiser` takes (fmnist, fmnist-v, an ema.safetensors such as the snapshots/step-N.safetensors
that `train-denoiser --snapshot-every N` keeps). For each: `denoiser-report` (x0 MSE per t-bucket against the mean
image), then `diffaug-fast train --denoiser D --seed S` (the default recipe) per seed and, with --corruptions,
`eval --suite corruptions --no-de --limit 10000`. Writes a table (Markdown + JSON) of quality against accuracy and a
plot. Finished steps are reused, so the study can be stopped and rerun.

--prior FILE (repeatable) reuses per-seed results already stored: an earlier study.json of this script (same train
options, an explicit `--denoiser-precision fp32` aside) or a scripts/compare_runs.py JSON (its DiffAug-on rows of one denoiser, e.g. the main job's
denoiser_choice_3seeds.json), so run folders that were not kept need not be trained again. Each row's `sources`
says, per seed, which run folder or file its numbers come from.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "diffaug_fast.cli"]
METRICS = (("clean_acc_full_test", "clean (10k)"), ("noisy_acc", "noisy"), ("noisy_de_acc", "noisy + DE"))


def _name(denoiser: str) -> str:
    """A folder name for a denoiser: the shipped name, or snapshot / file stem with its parent."""
    path = Path(denoiser)
    return denoiser if not path.suffix else re.sub(r"[^A-Za-z0-9_.-]", "_", f"{path.parent.parent.name}-{path.stem}")


def _run(cmd: list[str], log: Path) -> None:
    print(" ".join(cmd), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT)


def quality(denoiser: str, folder: Path, limit: int) -> dict:
    """x0 MSE per t-bucket; the mean over buckets and over t >= 600, and the mean image's MSE."""
    report = folder / "x0_mse_per_t.json"
    if not report.exists():
        _run(CLI + ["denoiser-report", "--model", denoiser, "--samples", "16", "--limit", str(limit),
                    "--out", str(folder)],
             folder / "report.log")
    buckets = json.loads(report.read_text())
    return {"x0_mse_mean": statistics.mean(b["x0_mse"] for b in buckets),
            # the buckets of the default DiffAug-Ensemble timesteps (0, 100, ..., 400)
            "x0_mse_t_below_500": statistics.mean(b["x0_mse"] for b in buckets if b["t_to"] < 500),
            "x0_mse_t600_up": statistics.mean(b["x0_mse"] for b in buckets if b["t_from"] >= 600),
            "mean_image_mse": buckets[0]["mean_image_mse"], "per_t": buckets}


def _recipe(args: list[str]) -> list[str]:
    """Train options as a recipe: an explicit `--denoiser-precision fp32` is what `auto` meant on the CPUs without
    bf16 (AVX2) where the stored studies ran; on a CPU with avx512_bf16 it keeps new runs comparable with them."""
    out = list(args)
    for i in range(len(out) - 1):
        if out[i:i + 2] == ["--denoiser-precision", "fp32"]:
            return out[:i] + out[i + 2:]
    return out


def load_prior(paths: list[str], extra: list[str]) -> dict[tuple[str, int], dict]:
    """Per-seed metrics of earlier runs, keyed by (denoiser, seed), from study.json / compare_runs.py files."""
    prior = {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        if isinstance(data.get("rows"), list):  # an earlier run of this script
            if _recipe(data.get("train_args", [])) != _recipe(extra):
                raise SystemExit(f"--prior {path}: made with train options {data.get('train_args')}, not {extra}")
            entries = [(row["denoiser"], data["seeds"], row) for row in data["rows"]]
        elif isinstance(data.get("rows"), dict):  # scripts/compare_runs.py: DiffAug-on rows of a single denoiser
            entries = [(row["denoiser"][0], row["seeds"], row) for row in data["rows"].values()
                       if row.get("diffaug") == ["on"] and len(row.get("denoiser", [])) == 1]
        else:
            raise SystemExit(f"--prior {path}: expected a study.json or a compare_runs.py JSON (a 'rows' entry)")
        for denoiser, seeds, row in entries:
            for i, seed in enumerate(seeds):
                values = {key: row[key]["values"][i] for key in row if isinstance(row[key], dict) and "values" in row[key]}
                prior[(denoiser, seed)] = {**values, "source": str(path)}
    return prior


def classifier(denoiser: str, run: Path, seed: int, extra: list[str], corruptions: bool, prior: dict) -> dict:
    stored = prior.get((denoiser, seed))
    needed = [key for key, _ in METRICS] + (["corruption_acc"] if corruptions else [])
    if not (run / "metrics.json").exists() and stored and all(key in stored for key in needed):
        return stored
    if not (run / "metrics.json").exists():
        _run(CLI + ["train", "--denoiser", denoiser, "--seed", str(seed), "--out", str(run),
                    *(["--resume"] if (run / "checkpoint.pt").exists() else []), *extra], run.with_suffix(".log"))
    metrics = {**json.loads((run / "metrics.json").read_text()), "source": str(run)}
    if corruptions:
        ev = run / "corruptions"
        if not (ev / "eval.json").exists():
            _run(CLI + ["eval", str(run), "--suite", "corruptions", "--no-de", "--limit", "10000", "--out", str(ev)],
                 ev / "eval.log")
        metrics["corruption_acc"] = json.loads((ev / "eval.json").read_text())["corruptions"]["mean_acc"]
    return metrics


def plot(rows: list[dict], metrics, path: Path) -> None:
    """Accuracy against the x0 MSE at the ensemble's t, one point per denoiser (mean ± std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # x: the x0 MSE at the ensemble's t (what noisy + DE follows); points unconnected, since the denoisers differ in
    # parametrization and diffusion, not only in training length
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    for key, label in metrics:
        xs, ys = [r["x0_mse_t_below_500"] for r in rows], [100 * r[key]["mean"] for r in rows]
        ax.errorbar(xs, ys, yerr=[100 * r[key]["std"] for r in rows], marker="o", linestyle="none", capsize=3,
                    label=label)
        if key == "noisy_de_acc":
            for r, x, y in zip(rows, xs, ys):
                ax.annotate(_name(r["denoiser"]).replace("den-v-ladder-", "v "), (x, y), fontsize=7,
                            xytext=(4, 4), textcoords="offset points")
    ax.set(xscale="log", xlabel="denoiser x0 MSE at t < 500 (DiffAug-Ensemble's t; lower is better)",
           ylabel="test accuracy (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("denoisers", nargs="+")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--runs", default="runs/quality")
    parser.add_argument("--out", default="docs/results/denoiser_quality")
    parser.add_argument("--report-limit", type=int, default=2000, help="test images of each x0 MSE")
    parser.add_argument("--corruptions", action="store_true", help="also corruption accuracy (full test set)")
    parser.add_argument("--prior", action="append", default=[], help="stored per-seed results to reuse (see above)")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    prior = load_prior(args.prior, extra)
    seeds = [int(s) for s in args.seeds.split(",")]
    metrics = METRICS + ((("corruption_acc", "corruptions"),) if args.corruptions else ())
    rows = []
    for denoiser in args.denoisers:
        name = _name(denoiser)
        row = {"denoiser": denoiser, **quality(denoiser, Path(args.runs) / name / "quality", args.report_limit)}
        per_seed = [classifier(denoiser, Path(args.runs) / name / f"seed{s}", s, extra, args.corruptions, prior)
                    for s in seeds]
        row["sources"] = {str(s): m["source"] for s, m in zip(seeds, per_seed)}
        for key, _ in metrics:
            values = [m[key] for m in per_seed]
            row[key] = {"mean": statistics.mean(values), "values": values,
                        "std": statistics.stdev(values) if len(values) > 1 else 0.0}
        rows.append(row)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(json.dumps({"seeds": seeds, "train_args": extra, "rows": rows}, indent=2))
    lines = [f"DiffAug (`diffaug-fast train --denoiser D{' ' + ' '.join(extra) if extra else ''}`) with each "
             f"denoiser D, seeds {args.seeds}: accuracy in %, mean ± std; x0 MSE from `denoiser-report` "
             f"({args.report_limit} test images; the mean image scores {rows[0]['mean_image_mse']:.3f}).", "",
             "| denoiser | x0 MSE, mean over t | x0 MSE, t < 500 (DE's t) | x0 MSE, t ≥ 600 | "
             + " | ".join(n for _, n in metrics) + " |",
             "|---|---|---|---|" + "---|" * len(metrics)]
    for row in rows:
        cells = [f"{100 * row[k]['mean']:.2f} ± {100 * row[k]['std']:.2f}" for k, _ in metrics]
        lines.append(f"| {row['denoiser']} | {row['x0_mse_mean']:.3f} | {row['x0_mse_t_below_500']:.3f} | "
                     f"{row['x0_mse_t600_up']:.3f} | "
                     + " | ".join(cells) + " |")
    plot(rows, metrics, out / "accuracy_vs_quality.png")
    lines += ["", "![accuracy against denoiser quality](accuracy_vs_quality.png)"]
    (out / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
