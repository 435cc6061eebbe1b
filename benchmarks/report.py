"""Turn a pytest-benchmark JSON into the ratio table of the README.

Usage: python benchmarks/report.py RESULTS.json [--markdown OUT.md]
Per group: median time of each implementation, its time relative to the fused
op (>1 means the fused op is that many times faster), and the fused op's
speed as a fraction of a plain copy of the same bytes.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict


def table(results: dict) -> str:
    groups = defaultdict(dict)
    for bench in results["benchmarks"]:
        info = bench["extra_info"]
        groups[(info["op"], info["shape"], info["dtype"])][info["impl"]] = bench["stats"]["median"]
    machine = results.get("machine_info", {})
    lines = [f"Machine: {machine.get('cpu', {}).get('brand_raw', machine.get('processor', '?'))}, "
             f"{machine.get('cpu', {}).get('count', '?')} logical CPUs; torch threads as configured; "
             f"{results.get('datetime', '')}", "",
             "| op | shape | dtype | fused (ms) | vs eager reference | vs compiled reference | vs eager idiom "
             "| vs compiled idiom | % of copy bandwidth |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (op, shape, dtype), t in sorted(groups.items()):
        fused = t.get("fused")
        if fused is None:
            continue

        def ratio(key_time):
            return f"{key_time / fused:.2f}x" if key_time else "-"

        lines.append(f"| {op} | {shape} | {dtype} | {fused * 1e3:.3f} | {ratio(t.get('eager_reference'))} | "
                     f"{ratio(t.get('compiled_reference'))} | {ratio(t.get('eager_idiom'))} | "
                     f"{ratio(t.get('compiled_idiom'))} | {100 * t['copy'] / fused:.0f}% |")
    return "\n".join(lines)


def main(make_table=table) -> None:
    """Print (and optionally save) the table of a results JSON; shared by the benchmark report scripts."""
    parser = argparse.ArgumentParser()
    parser.add_argument("json")
    parser.add_argument("--markdown")
    args = parser.parse_args()
    with open(args.json) as f:
        text = make_table(json.load(f))
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
