"""Baseline vs DiffAug (each with and without DiffAug-Ensemble) under `diffaug-fast eval`, over seeds.

Usage: python scripts/robustness_study.py [--seeds 0,1,2] [--runs runs/study] [--out docs/results/fmnist_robustness]
       [--labels "off,on"] [--reference-runs runs/study-default] [--compare OTHER.json]
       [-- more `diffaug-fast eval` options]
Evaluates the finished runs of scripts/fmnist_study.py (`diffaug-{off,on}-seedS` under --runs; a missing one is an
error naming the command that trains it, since only that script knows the recipe), the baselines first (mCE
reference, per seed), then the DiffAug runs, and writes a mean ± std table (Markdown + JSON) and accuracy vs
corruption severity (PNG). mCE is relative to the same seed's `--diffaug off` run, or to that of --reference-runs
(its evaluation must exist; every run here is then evaluated against it), e.g. to compare AugMix runs with the
plain baseline; --compare draws another study's curves (its JSON output) in the same severity plot.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path

from study_common import CLI, study_run, two_labels

EVAL_BUDGET = ["--limit", "200", "--certify-limit", "50", "--n", "100"]


def finished_run(parser: argparse.ArgumentParser, runs: str, mode: str, seed: int) -> Path:
    run = study_run(runs, mode, seed)
    if not (run / "metrics.json").exists():
        parser.error(f"--runs: {run} is not a finished run; train the study first with `python scripts/fmnist_study.py "
                     f"--runs {runs} --seeds {seed} -- <its train options>`")
    return run


def budget(extra: list[str]) -> list[str]:
    """EVAL_BUDGET's flag / value pairs that ``extra`` does not set, then ``extra``: the options in effect."""
    pairs = [EVAL_BUDGET[i:i + 2] for i in range(0, len(EVAL_BUDGET), 2)]
    return [x for flag, value in pairs if flag not in extra for x in (flag, value)] + extra


def ensure_eval(run: Path, out: Path, extra: list[str], baseline: Path | None) -> dict:
    if not (out / "eval.json").exists():
        cmd = CLI + ["eval", str(run), *budget(extra), "--out", str(out),
                     *(["--baseline", str(baseline)] if baseline else [])]
        print(" ".join(cmd), flush=True)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "eval.log", "w") as log:
            subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    return json.loads((out / "eval.json").read_text())


FIXED_ROWS = {  # name -> (plain metric, DiffAug-Ensemble metric), each a function of eval.json
    "clean accuracy": (lambda e: e["clean_acc"], lambda e: e["clean_de_acc"]),
    "worst corruption (mean over its severities)": (
        lambda e: min(statistics.mean(r["acc"] for r in sev.values()) for sev in e["corruptions"]["per_corruption"].values()),
        None),
    "mean corruption accuracy": (lambda e: e["corruptions"]["mean_acc"], lambda e: e["corruptions"]["mean_de_acc"]),
    "mCE (relative to the same seed's plain baseline)": (lambda e: e["mce"], lambda e: e["de_mce"]),
}
FIXED_ROWS.update({f"corruption accuracy, severity {k + 1}": (lambda e, k=k: e["corruptions"]["acc_per_severity"][k],
                                                              lambda e, k=k: e["corruptions"]["de_acc_per_severity"][k])
                   for k in range(5)})


def _seen(evals: dict, suite: str) -> list[str]:
    """The keys of one suite's results over all evaluations, in the order they first appear."""
    return list(dict.fromkeys(k for runs in evals.values() for e in runs for k in e.get(suite, {})))


def rows(evals: dict) -> dict:
    """Every row this study can show: the fixed ones, then one set of OOD rows per evaluated OOD set (the defaults
    or the user's own folders) and one certified-accuracy row per evaluated σ and radius."""
    table = dict(FIXED_ROWS)
    for name in _seen(evals, "ood"):
        table[f"OOD {name} AUROC (MSP)"] = (lambda e, s=name: e["ood"][s]["msp"]["auroc"],
                                            lambda e, s=name: e["ood"][s]["de_msp"]["auroc"])
        table[f"OOD {name} FPR@95 (MSP)"] = (lambda e, s=name: e["ood"][s]["msp"]["fpr_at_95_tpr"],
                                             lambda e, s=name: e["ood"][s]["de_msp"]["fpr_at_95_tpr"])
        table[f"OOD {name} AUROC (energy)"] = (lambda e, s=name: e["ood"][s]["energy"]["auroc"],
                                               lambda e, s=name: e["ood"][s]["de_energy"]["auroc"])
    for sigma in _seen(evals, "certify"):
        radii = dict.fromkeys(r for runs in evals.values() for e in runs
                              for r in e.get("certify", {}).get(sigma, {}).get("certified_acc", {}))
        table.update({f"certified acc σ={sigma}, r={r}": (lambda e, s=sigma, r=r: e["certify"][s]["certified_acc"][r],
                                                          None) for r in radii})
    return table


def value(fn, e: dict):
    """A row's number from one eval.json, or None where that suite or DiffAug-Ensemble was not run."""
    try:
        return fn(e)
    except (KeyError, TypeError):
        return None


def stat(values: list[float]) -> str:
    mean = statistics.mean(values)
    return f"{100 * mean:.1f}" + (f" ± {100 * statistics.stdev(values):.1f}" if len(values) > 1 else "")


def lower_is_better(name: str) -> bool:
    return name.startswith("mCE") or "FPR" in name


def paired_gaps(evals: dict, seeds: list[int], labels: list[str]) -> tuple[list[str], dict]:
    """Markdown rows and JSON of what DiffAug-Ensemble changes, paired by seed: DE − plain for each classifier, and
    (on + DE) − (off + DE); each cell lists the per-seed gaps in points, their mean, and on how many seeds the change
    goes the better way (lower for mCE and FPR, higher otherwise). Rows without a DE metric or DE results drop out."""
    comparisons = {f"{labels[0]}: DE − plain": (("off", 0), ("off", 1)),
                   f"{labels[1]}: DE − plain": (("on", 0), ("on", 1)),
                   f"{labels[1]} + DE − {labels[0]} + DE": (("off", 1), ("on", 1))}
    lines = ["| metric (points) | " + " | ".join(comparisons) + " |", "|---|" + "---|" * len(comparisons)]
    table = {}
    for name, fns in rows(evals).items():
        if fns[1] is None:
            continue
        cells, row = [], {}
        for title, ((mode_a, fn_a), (mode_b, fn_b)) in comparisons.items():
            a = [value(fns[fn_a], e) for e in evals[mode_a]]
            b = [value(fns[fn_b], e) for e in evals[mode_b]]
            if None in a or None in b:
                break
            gaps = [100 * (y - x) for x, y in zip(a, b)]
            better = sum((g < 0) if lower_is_better(name) else (g > 0) for g in gaps)
            row[title] = {"per_seed": dict(zip(seeds, gaps)), "mean": statistics.mean(gaps), "better": better}
            cells.append(" / ".join(f"{g:+.1f}" for g in gaps) + f" (mean {statistics.mean(gaps):+.1f}; better on "
                         f"{better} of {len(gaps)})")
        else:
            table[name] = row
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return (lines if table else []), table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--runs", default="runs/study")
    parser.add_argument("--out", default="docs/results/fmnist_robustness")
    parser.add_argument("--eval-dir", default="robustness", help="each run's evaluation folder (reused if done)")
    parser.add_argument("--labels", default="baseline,DiffAug", help="names of the off and on columns, comma-separated")
    parser.add_argument("--reference-runs", default=None,
                        help="a study folder whose diffaug-off-seedS/<eval-dir> evaluations are the mCE reference")
    parser.add_argument("--compare", default=None, help="another study's JSON output whose curves join the severity plot")
    parser.add_argument("extra", nargs="*", help="more `diffaug-fast eval` options, after --")
    args = parser.parse_args()
    labels = two_labels(parser, args.labels)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.reference_runs:
        files = [study_run(args.reference_runs, "off", seed) / args.eval_dir / "eval.json" for seed in seeds]
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            parser.error(f"--reference-runs: no evaluation at {', '.join(missing)}; run this script on that study first")
    evals = {"off": [], "on": []}
    for seed in seeds:
        base = finished_run(parser, args.runs, "off", seed)
        reference = study_run(args.reference_runs, "off", seed) / args.eval_dir if args.reference_runs else None
        evals["off"].append(ensure_eval(base, base / args.eval_dir, args.extra, reference))
        run = finished_run(parser, args.runs, "on", seed)
        evals["on"].append(ensure_eval(run, run / args.eval_dir, args.extra, reference or base / args.eval_dir))
    reference = evals["off"]
    if args.reference_runs:
        reference = [json.loads(f.read_text()) for f in files]
    from diffaug_fast.eval.robustness.suite import corruption_error

    for mode in evals:
        for e, base in zip(evals[mode], reference):
            if "corruptions" not in e:
                continue
            e["mce"] = corruption_error(e["corruptions"], base["corruptions"])["mce"]
            if "de_acc_per_severity" in e["corruptions"]:
                e["de_mce"] = corruption_error(e["corruptions"], base["corruptions"], "de_acc")["mce"]
    header = f"| metric (%) | {labels[0]} | {labels[0]} + DE | {labels[1]} | {labels[1]} + DE |"
    first = json.loads((Path(args.runs) / f"diffaug-on-seed{seeds[0]}" / "config.json").read_text())
    recipe = (f"{first['optim']['epochs']} epoch(s), 78 k ResNet, DiffAug copies of "
              f"{first['diffaug'].get('fraction', 1):g} of each batch"
              + (f" weighing {first['diffaug']['weight']:g} each" if first["diffaug"].get("weight", 1) != 1 else "")
              + (f", AugMix views with a Jensen–Shannon term of {first['diffaug']['jsd']:g}" if first["diffaug"].get("jsd")
                 else ", AugMix" if first["diffaug"].get("augmix") else ""))
    lines = [f"Fashion-MNIST, `diffaug-fast train` runs of `{args.runs}` ({recipe}), seeds {args.seeds}{', mean ± std' if len(seeds) > 1 else ''}; "
             f"`diffaug-fast eval {' '.join(budget(args.extra))}` ("
             + ("" if "--no-de" in args.extra else "DE = DiffAug-Ensemble over t = 0, 100, …, 400; ")
             + "certified accuracy by randomized smoothing with the embedded denoiser, alpha = 0.001)"
             + (f"; mCE relative to `{args.reference_runs}`'s diffaug-off runs" if args.reference_runs else "") + ".", "",
             header, "|---|---|---|---|---|"]
    table = {}
    for name, (plain, de) in rows(evals).items():
        cells = []
        for mode in ("off", "on"):
            for fn in (plain, de):
                values = [value(fn, e) for e in evals[mode]] if fn else [None]
                cells.append(stat(values) if None not in values else "—")
        if set(cells) == {"—"}:  # a suite this study did not run
            continue
        table[name] = cells
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    gap_lines, gaps = paired_gaps(evals, seeds, labels)
    if gap_lines:
        lines += ["", f"Paired by seed ({', '.join(map(str, seeds))}), in points:", "", *gap_lines]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"seeds": seeds, "eval_budget": budget(args.extra), "labels": labels,
                                                    "mce_reference": args.reference_runs or args.runs,
                                                    "table": table, "paired_gaps": gaps, "evals": evals}, indent=2))
    if any("corruptions" in e for e in evals["on"]):
        curves = [(evals, labels)]
        if args.compare:
            other = json.loads(Path(args.compare).read_text())
            other_labels = other.get("labels", ["baseline", "DiffAug"])
            if set(other_labels) & set(labels):  # the same names: say which study each curve is
                other_labels = [f"{label} ({Path(args.compare).stem})" for label in other_labels]
                curves = [(evals, [f"{label} ({out.name})" for label in labels])]
            curves.insert(0, (other["evals"], other_labels))
        lines += ["", f"![accuracy vs severity]({severity_plot(curves, out).name})"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def severity_plot(curves: list[tuple[dict, list[str]]], out: Path) -> Path:
    """Mean accuracy over corruptions per severity, one line per (study, off / on) and DiffAug-Ensemble variant."""
    png = out.parent / f"{out.name}_severity.png"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for evals, labels in curves:
        for mode, label in zip(("off", "on"), labels):
            for key, style, suffix in (("acc_per_severity", "-o", ""), ("de_acc_per_severity", "--s", " + DE")):
                if any(key not in e.get("corruptions", {}) for e in evals[mode]):
                    continue
                per_seed = [e["corruptions"][key] for e in evals[mode]]
                mean = [statistics.mean(v) * 100 for v in zip(*per_seed)]
                ax.plot(range(1, 6), mean, style, label=label + suffix)
    ax.set(xlabel="corruption severity", ylabel="accuracy (%), mean of 15 corruptions", xticks=range(1, 6))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    return png


if __name__ == "__main__":
    main()
