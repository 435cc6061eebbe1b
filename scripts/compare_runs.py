"""Tabulate finished `diffaug-fast train` runs side by side: one row per group of seeds, mean ± std and every value.

Usage: python scripts/compare_runs.py "LABEL=GLOB" ["LABEL=GLOB" ...] --out docs/results/NAME [--title TEXT]
GLOB matches run folders (each with metrics.json and config.json), e.g.
  "DiffAug, eps denoiser=runs/study-default/diffaug-on-seed*"  "DiffAug, v denoiser=runs/study-default-v/diffaug-on-seed*"
Writes NAME.json (per-row seeds, values, mean, std, the runs' denoiser and seconds) and NAME.md (the table). Rows must
have the same seeds so that paired gaps (each row minus the first, per seed) mean something; they are printed too.
"""
from __future__ import annotations

import argparse
import glob
import json
import statistics
from pathlib import Path

from fmnist_study import METRICS


def load_group(label: str, pattern: str, parser: argparse.ArgumentParser) -> dict:
    runs = sorted(Path(p) for p in glob.glob(pattern) if (Path(p) / "metrics.json").exists())
    if not runs:
        parser.error(f"{label!r}: no finished run (metrics.json) matches {pattern}")
    rows = [(json.loads((r / "config.json").read_text()), json.loads((r / "metrics.json").read_text())) for r in runs]
    seeds = [c["run"]["seed"] for c, _ in rows]
    group = {"runs": [str(r) for r in runs], "seeds": seeds, "denoiser": sorted({c["diffaug"]["denoiser"] for c, _ in rows}),
             "diffaug": sorted({c["diffaug"]["mode"] for c, _ in rows}),
             "seconds": [round(m["train_seconds_this_call"], 1) for _, m in rows]}
    for key, _ in METRICS:
        values = [m[key] for _, m in rows]
        group[key] = {"values": values, "mean": statistics.mean(values),
                      "std": statistics.stdev(values) if len(values) > 1 else 0.0}
    return group


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("groups", nargs="+", metavar="LABEL=GLOB")
    parser.add_argument("--out", required=True)
    parser.add_argument("--title", default="Finished `diffaug-fast train` runs")
    args = parser.parse_args()
    table = {}
    for item in args.groups:
        label, sep, pattern = item.partition("=")
        if not sep:
            parser.error(f"expected LABEL=GLOB, got {item!r}")
        table[label] = load_group(label, pattern, parser)
    first = next(iter(table.values()))
    lines = [f"{args.title}: test accuracy in %, mean ± std over seeds (seeds per row in the json).", "",
             "| runs | seeds | " + " | ".join(name for _, name in METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    for label, g in table.items():
        cells = [f"{100 * g[k]['mean']:.2f} ± {100 * g[k]['std']:.2f}" for k, _ in METRICS]
        lines.append(f"| {label} | {', '.join(map(str, g['seeds']))} | " + " | ".join(cells) + " |")
    paired = [(label, g) for label, g in list(table.items())[1:] if g["seeds"] == first["seeds"]]
    if paired:
        lines += ["", f"Paired per seed ({', '.join(map(str, first['seeds']))}), each row minus "
                      f"\"{next(iter(table))}\", points:", "",
                  "| runs | " + " | ".join(name for _, name in METRICS) + " |", "|---|" + "---|" * len(METRICS)]
        for label, g in paired:
            gaps = {k: [100 * (a - b) for a, b in zip(g[k]["values"], first[k]["values"])] for k, _ in METRICS}
            g["paired_gap_points"] = gaps
            lines.append(f"| {label} | " + " | ".join(" / ".join(f"{x:+.2f}" for x in gaps[k]) for k, _ in METRICS) + " |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"title": args.title, "rows": table}, indent=1))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
