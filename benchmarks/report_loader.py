"""images/s of benchmarks/test_bench_loader.py results: loading (per worker count) beside the DiffAug step.

Usage: python benchmarks/report_loader.py RESULTS.json [--markdown OUT.md]
"""
from __future__ import annotations

import argparse
import json


def table(results: dict) -> str:
    machine = results.get("machine_info", {})
    lines = [f"Machine: {machine.get('cpu', {}).get('brand_raw', '?')}, {machine.get('cpu', {}).get('count', '?')} "
             f"logical CPUs; torch {machine.get('torch', '?')}; {results.get('datetime', '')}", "",
             "| task | device | images per round | median s | images/s |", "|---|---|---|---|---|"]
    for bench in results["benchmarks"]:
        info, median = bench["extra_info"], bench["stats"]["median"]
        lines.append(f"| {info['task']} | {info.get('device', '?')} | {info['images']} | {median:.3f} | "
                     f"{info['images'] / median:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("results")
    parser.add_argument("--markdown")
    args = parser.parse_args()
    text = table(json.load(open(args.results)))
    print(text)
    if args.markdown:
        open(args.markdown, "w").write(text + "\n")
