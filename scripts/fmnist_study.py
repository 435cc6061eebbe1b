"""Baseline vs DiffAug on Fashion-MNIST over several seeds with `diffaug-fast train`'s defaults.

Usage: python scripts/fmnist_study.py [--seeds 0,1,2] [--runs runs/study] [--out docs/results/fmnist_default]
       [--labels "off row,on row"] [-- more train options, e.g. --preset quick]
Runs (or reuses finished) `diffaug-fast train --diffaug {off,on} --seed S` and writes mean ± std of the
final metrics, every seed's values, the runs' config and their training + evaluation seconds as JSON and a
Markdown table.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from study_common import train_study_run, two_labels

METRICS = (("clean_acc_full_test", "clean (10k test)"), ("clean_acc", "clean (eval subset)"), ("de_acc", "DiffAug-Ensemble"),
           ("noisy_acc", "noisy test"), ("noisy_de_acc", "noisy + DiffAug-Ensemble"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--runs", default="runs/study")
    parser.add_argument("--out", default="docs/results/fmnist_default")
    parser.add_argument("--labels", default="baseline (crop + flip),DiffAug (crop + flip + DiffAug)",
                        help="the table's names of the --diffaug off and on rows, comma-separated")
    parser.add_argument("extra", nargs="*", help="more `diffaug-fast train` options, after --")
    args = parser.parse_args()
    labels = two_labels(parser, args.labels)
    seeds = [int(s) for s in args.seeds.split(",")]
    table = {}
    for mode in ("off", "on"):
        rows = []
        for seed in seeds:
            run = train_study_run(args.runs, mode, seed, args.extra)
            rows.append(json.loads((run / "metrics.json").read_text()))
        table[mode] = {key: {"mean": statistics.mean(r[key] for r in rows), "std": statistics.stdev(r[key] for r in rows)
                             if len(rows) > 1 else 0.0, "values": [r[key] for r in rows]} for key, _ in METRICS}
        table[mode]["eval_images"] = rows[0]["eval_images"]
        table[mode]["seconds"] = [round(r["train_seconds_this_call"], 1) for r in rows]
        table[mode]["config"] = json.loads((Path(args.runs) / f"diffaug-{mode}-seed{seeds[0]}" / "config.json").read_text())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"seeds": seeds, "extra_args": args.extra, **table}, indent=2))
    lines = [f"Fashion-MNIST, `diffaug-fast train` defaults{' ' + ' '.join(args.extra) if args.extra else ''}, "
             f"seeds {args.seeds}: test accuracy in %, mean ± std. DiffAug-Ensemble and noisy columns on the first "
             f"{table['on']['eval_images']} test images (the eval subset).", "",
             "| training | " + " | ".join(name for _, name in METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for mode, label in zip(("off", "on"), labels):
        cells = [f"{100 * table[mode][k]['mean']:.2f} ± {100 * table[mode][k]['std']:.2f}" for k, _ in METRICS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
