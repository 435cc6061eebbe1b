"""A study's report, computed from its runs.json alone: per-variant numbers, each declared claim's verdict, the
selection on validation; written as study.json (machine-readable), README.md and one picture per compared metric.

Why from runs.json alone: the run folders live on the machines that made them; the stored runs are the evidence,
so anyone can regenerate the report, and it cannot quietly use numbers that were never stored.
"""
from __future__ import annotations

import json
import math
import shlex
import textwrap
from pathlib import Path

from diffaug_fast.runs import files
from diffaug_fast.studies.collect import RUNS_FILE, read_runs
from diffaug_fast.studies.spec import Metric, Study
from diffaug_fast.studies.verdicts import compare, t_interval

STUDY_FILE = "study.json"


def _num(x: float | None) -> float | None:
    return None if x is None else float(f"{x:.6g}")


def values_by_seed(study: Study, runs: list[dict], metric: str, variant: str) -> dict[int, float]:
    """The raw values one variant's declared seeds have for one metric."""
    return {r["seed"]: float(r["metrics"][metric]) for r in runs
            if r.get("variant") == variant and r.get("seed") in study.seeds and metric in r.get("metrics", {})}


def _spread(values: list[float]) -> dict:
    n = len(values)
    mean = sum(values) / n if n else None
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n >= 2 else None
    iv = t_interval(values) if n >= 2 else None
    return {"n": n, "mean": _num(mean), "std": _num(std),
            "interval": None if iv is None else {"low": _num(iv.low), "high": _num(iv.high)}}


def _metric_summary(study: Study, runs: list[dict], m: Metric) -> dict:
    out = {"name": m.name, "label": m.label, "file": m.file, "key": m.key, "percent": m.percent, "images": m.images,
           "variants": []}
    for v in study.variants:
        seeds = values_by_seed(study, runs, m.name, v.name)
        shown = {s: x * m.scale for s, x in sorted(seeds.items())}
        out["variants"].append({"variant": v.name, "label": v.label, "values": {str(s): _num(x) for s, x in
                                                                                shown.items()},
                                **_spread(list(shown.values()))})
    return out


def _comparison(study: Study, runs: list[dict], c) -> dict:
    """a's ``metric`` against b's ``metric_b``, paired by seed. Two metrics of the same runs (a is b) are measured
    on the same images: the one-run interval over images, for independent samples, does not apply to them."""
    m, mb = study.metric(c.metric), study.metric(c.b_metric)
    a = {s: c.sign * x for s, x in values_by_seed(study, runs, m.name, c.a).items()}
    b = {s: c.sign * x for s, x in values_by_seed(study, runs, mb.name, c.b).items()}
    images = m.images if mb.images is not None else None  # one run: both sides need their image count
    result = compare(a, b, c.direction, margin=c.margin, scale=m.scale, images=images, images_b=mb.images,
                     same_runs=c.same_runs)
    return {"claim": c.claim, "a": c.a, "b": c.b, "metric": c.metric, "metric_b": c.b_metric, "sign": c.sign,
            **result}


def _selection(study: Study, runs: list[dict]) -> dict | None:
    sel = study.selection
    if sel is None:
        return None
    m = study.metric(sel.metric)
    by_variant = {v: values_by_seed(study, runs, m.name, v) for v in sel.among}
    seeds = sorted(set.intersection(*(set(x) for x in by_variant.values())))
    means = {v: _num(sum(x[s] for s in seeds) * m.scale / len(seeds)) if seeds else None
             for v, x in by_variant.items()}
    chosen = None
    if seeds:
        sign = 1 if sel.goal == "highest" else -1
        best = max(sign * x for x in means.values())
        chosen = next(v for v in sel.among if sign * means[v] >= best - sel.tolerance)
    return {"metric": sel.metric, "among": list(sel.among), "rule": sel.rule, "tolerance": sel.tolerance,
            "goal": sel.goal, "seeds": seeds, "means": means, "chosen": chosen}


def summarize(study: Study, runs: list[dict]) -> dict:
    """Everything the report says, as JSON-ready data (study.json)."""
    mine = [r for r in runs if r.get("variant") in study.variant_names and r.get("seed") in study.seeds]
    facts = [r.get("facts", {}) for r in mine]
    return {"study": study.name, "title": study.title, "question": study.question, "budget": study.budget,
            "seeds": list(study.seeds), "command": study.command, "options": list(study.options),
            "notes": list(study.notes), "file": f"experiments/{study.name}.toml",
            "variants": [{"name": v.name, "label": v.label, "options": list(v.options)} for v in study.variants],
            "runs": len(mine), "runs_ignored": len(runs) - len(mine),
            "machines": sorted({f["machine"] for f in facts if f.get("machine")}),
            "commits": sorted({f["commit"] for f in facts if f.get("commit")}),
            "predating_split": [f"{r['variant']} seed {r['seed']}" for r in mine
                                if r.get("facts", {}).get("predates_split")],
            "metrics": [_metric_summary(study, mine, m) for m in study.metrics],
            "comparisons": [_comparison(study, mine, c) for c in study.comparisons],
            "selection": _selection(study, mine)}


def _fmt(x: float | None, percent: bool, signed: bool = False) -> str:
    if x is None:
        return "–"
    text = f"{x:+.2f}" if signed and percent else f"{x:.2f}" if percent else f"{x:+.4g}" if signed else f"{x:.4g}"
    return text.replace("-", "−")


def difference_cell(c: dict, percent: bool) -> str:
    iv = c["interval"]
    if iv is None:
        return "no pair of runs" if not c["seeds"] else "no interval"
    return f"{_fmt(iv['mean'], percent, True)} [{_fmt(iv['low'], percent, True)}, {_fmt(iv['high'], percent, True)}]"


def verdict_cell(c: dict) -> str:
    text = f"**{c['verdict']}**"
    if c["verdict"] == "inconclusive" and c.get("seeds_to_resolve"):
        text += f" (~{c['seeds_to_resolve']} seeds at this spread)"
    return text


def metric_cell(c: dict, metrics: dict) -> str:
    """The compared metric's label, or "A vs B" when the claim reads another metric from b."""
    label = metrics[c["metric"]]["label"]
    other = c.get("metric_b", c["metric"])
    return label if other == c["metric"] else f"{label} vs {metrics[other]['label']}"


def variants_cell(c: dict) -> str:
    return f"({c['a']})" if c["a"] == c["b"] else f"({c['a']} vs {c['b']})"


def claim_cell(c: dict, percent: bool) -> str:
    claim = c["claim"].replace("|", "\\|")
    if c["direction"] == "keeps" and "within" not in claim:
        return f"{claim} (within {c['margin']:g} {'points' if percent else 'units'})"
    return claim


def markdown(summary: dict, pictures: list[str]) -> str:
    s = summary
    metrics = {m["name"]: m for m in s["metrics"]}
    lines = [f"Generated by `diffaug-fast study report {s['file']}` from runs.json; do not edit.", "",
             f"# {s['title']}", "", s["question"], "",
             f"- **budget**: {s['budget']}",
             f"- **seeds**: {', '.join(map(str, s['seeds']))} ({s['runs']} runs stored)",
             f"- **machine{'s' if len(s['machines']) > 1 else ''}**: {'; '.join(s['machines']) or 'not recorded'}",
             f"- **commit{'s' if len(s['commits']) > 1 else ''}**: {', '.join(s['commits']) or 'not recorded'}",
             f"- **every run**: `diffaug-fast {s['command']} {shlex.join(s['options'])}` + the variant's options"]
    if s["predating_split"]:
        lines.append(f"- **runs predating the validation split** (trained on every training image): "
                     f"{', '.join(s['predating_split'])}")
    lines += [f"- {note}" for note in s["notes"]]
    lines += ["", "## Variants", "", "| variant | label | options |", "|---|---|---|"]
    lines += [f"| {v['name']} | {v['label']} | {'`' + shlex.join(v['options']) + '`' if v['options'] else '–'} |"
              for v in s["variants"]]
    lines += ["", "## Results", "", "Mean ± standard deviation over seeds (number of runs); percentages in %.", "",
              "| metric | " + " | ".join(v["name"] for v in s["variants"]) + " |",
              "|---|" + "---|" * len(s["variants"])]
    for m in s["metrics"]:
        cells = ["–" if not row["n"] else _fmt(row["mean"], m["percent"])
                 + (f" ± {_fmt(row['std'], m['percent'])}" if row["std"] is not None else "") + f" ({row['n']})"
                 for row in m["variants"]]
        lines.append(f"| {m['label']}{' (%)' if m['percent'] else ''} | " + " | ".join(cells) + " |")
    if s["comparisons"]:
        two_metrics = any(c["metric_b"] != c["metric"] for c in s["comparisons"])
        lines += ["", "## Claims", "", "Difference a − b paired by seed, in points for percentages; 95 % interval."
                  + (" Where the metric reads \"A vs B\", the claim compares two metrics: A of a's runs against B "
                     "of b's (the same runs, on the same images, when one variant is named)." if two_metrics else ""),
                  "",
                  "| claim | metric | seeds | difference, 95 % interval | verdict | method |",
                  "|---|---|---|---|---|---|"]
        for c in s["comparisons"]:
            m = metrics[c["metric"]]
            lines.append(f"| {claim_cell(c, m['percent'])} {variants_cell(c)} | {metric_cell(c, metrics)} | "
                         f"{', '.join(map(str, c['seeds'])) or '–'} | {difference_cell(c, m['percent'])} | "
                         f"{verdict_cell(c)} | {c['method']} |")
    if s["selection"]:
        sel, m = s["selection"], metrics[s["selection"]["metric"]]
        means = ", ".join(f"{v} {_fmt(x, m['percent'])}" for v, x in sel["means"].items())
        lines += ["", "## Selection (on validation)", "", f"Rule, declared before the runs: {sel['rule']}.", "",
                  (f"On {m['label']} over seeds {', '.join(map(str, sel['seeds']))}: **{sel['chosen']}** "
                   f"(means: {means})." if sel["chosen"] else "No seed has runs of every variant yet: nothing chosen.")]
    if pictures:
        lines += ["", "## Per-seed values", ""] + [f"![{p}]({p})" for p in pictures]
    return "\n".join(lines) + "\n"


def picture(metric: dict, path: Path) -> Path:
    """Per-seed dots per variant, with the mean and its 95 % t interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(metric["variants"]), 3.6))
    seeds = sorted({s for v in metric["variants"] for s in v["values"]}, key=int)
    for s in seeds:  # the same seed across variants: the pairing the comparisons use
        pairs = [(i, v["values"][s]) for i, v in enumerate(metric["variants"]) if s in v["values"]]
        ax.plot(*zip(*pairs), color="0.8", lw=0.8, zorder=2)
    for i, v in enumerate(metric["variants"]):
        ys = list(v["values"].values())
        ax.scatter([i] * len(ys), ys, s=18, color="tab:blue", alpha=0.7, zorder=3)
        if v["mean"] is not None:
            iv = v["interval"]
            err = None if iv is None else [[v["mean"] - iv["low"]], [iv["high"] - v["mean"]]]
            ax.errorbar([i + 0.3], [v["mean"]], yerr=err, fmt="o", color="black", capsize=4, zorder=4)
    ax.set_xticks(range(len(metric["variants"])), [v["variant"] for v in metric["variants"]], rotation=20)
    ax.set_ylabel("%" if metric["percent"] else metric["name"], fontsize=8)
    ax.set_title(textwrap.fill(metric["label"], 48) + "\nseeds: dots (a line joins a seed); black: mean, 95 % t "
                 "interval", fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(study: Study, results_dir: str | Path) -> Path:
    """study.json, README.md and the pictures in ``results_dir`` (which holds runs.json); returns the README."""
    results_dir = Path(results_dir)
    runs_path = results_dir / RUNS_FILE
    if not runs_path.is_file():
        raise FileNotFoundError(f"{runs_path} does not exist: run `diffaug-fast study run {study.path}` first (or "
                                "give --results the folder holding the study's runs.json)")
    summary = summarize(study, read_runs(runs_path))
    compared = dict.fromkeys(name for c in summary["comparisons"] for name in (c["metric"], c["metric_b"]))
    pictures = []
    for m in summary["metrics"]:
        if m["name"] in compared and any(v["n"] for v in m["variants"]):
            pictures.append(picture(m, results_dir / f"{m['name']}.png").name)
    files.write_text_atomic(results_dir / STUDY_FILE, json.dumps(summary, indent=2) + "\n")
    return files.write_text_atomic(results_dir / "README.md", markdown(summary, pictures))
