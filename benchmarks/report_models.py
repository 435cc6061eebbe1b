"""Turn test_bench_models.py's pytest-benchmark JSON into the README's table.

Usage: python benchmarks/report_models.py RESULTS.json [--markdown OUT.md]
Per group (one task): each implementation's median time, images/s, and speed relative to the group's
baseline (>1: faster than the baseline).
"""
from __future__ import annotations

from collections import defaultdict


def table(results: dict) -> str:
    groups = defaultdict(list)
    for bench in results["benchmarks"]:
        groups[bench["group"]].append((bench["extra_info"], bench["stats"]["median"]))
    machine = results.get("machine_info", {})
    lines = [f"Machine: {machine.get('cpu', {}).get('brand_raw', '?')}, {machine.get('cpu', {}).get('count', '?')} "
             f"logical CPUs, torch {machine.get('torch', '?')} ({machine.get('torch_threads', '?')} threads); "
             f"device {next(iter(groups.values()))[0][0].get('device', '?') if groups else '?'}; "
             f"{results.get('datetime', '')}", "",
             "| task | implementation | median (ms) | images/s | speed vs baseline |", "|---|---|---|---|---|"]
    for group, rows in groups.items():
        base = next((t for info, t in rows if info.get("baseline")), None)
        for info, t in rows:
            ratio = f"{base / t:.2f}x" if base else "-"
            lines.append(f"| {group} | {info['impl']}{' (baseline)' if info.get('baseline') else ''} | "
                         f"{t * 1e3:.2f} | {info['images'] / t:,.0f} | {ratio} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from report import main

    main(table)
