"""Turn test_bench_precision.py's pytest-benchmark JSON into the README's performance table.

Usage: python benchmarks/report_precision.py RESULTS.json [--markdown OUT.md]
Per task: each row's median time, images/s, speed relative to the official pattern in eager fp32 and under
torch.compile (>1: faster), achieved GFLOP/s (the FLOPs torch.utils.flop_counter counts for the row's networks,
divided by its median time) and that rate as a share of the matmul rate at the row's precision measured in
the same run.
"""
from __future__ import annotations

from collections import defaultdict


def matmul_rates(benchmarks) -> dict[str, float]:
    """precision -> GFLOP/s of the run's matmul yardstick."""
    return {b["extra_info"]["precision"]: b["extra_info"]["flops"] / b["stats"]["median"] / 1e9
            for b in benchmarks if b["extra_info"]["impl"].startswith("matmul_")}


def rows(results: dict) -> list[dict]:
    """One dict per benchmark row with its derived numbers (tests and the table read these)."""
    benches = results["benchmarks"]
    rates = matmul_rates(benches)
    groups = defaultdict(list)
    for b in benches:
        if not b["extra_info"]["impl"].startswith("matmul_"):
            groups[b["group"]].append(b)
    out = []
    for group, members in groups.items():
        by_impl = {b["extra_info"]["impl"]: b["stats"]["median"] for b in members}
        eager, compiled = by_impl.get("official_eager_fp32"), by_impl.get("official_compiled_fp32")
        for b in members:
            info, t = b["extra_info"], b["stats"]["median"]
            gflops = info["flops"] / t / 1e9
            out.append({"task": group, "impl": info["impl"], "precision": info["precision"], "median_s": t,
                        "images_per_s": info["images"] / t,
                        "vs_official_eager": eager / t if eager else None,
                        "vs_official_compiled": compiled / t if compiled else None,
                        "gflops": gflops, "emulated": bool(info.get("emulated")),
                        "matmul_share": gflops / rates[info["precision"]] if info["precision"] in rates else None})
    return out


def _ratio(value):
    return "-" if value is None else f"{value:.2f}x"


def table(results: dict) -> str:
    machine = results.get("machine_info", {})
    benches = results["benchmarks"]
    info = benches[0]["extra_info"] if benches else {}
    where = info.get("gpu") or f"{machine.get('cpu', {}).get('brand_raw', '?')}, " \
                                f"{machine.get('cpu', {}).get('count', '?')} logical CPUs"
    rates = matmul_rates(benches)
    lines = [f"Machine: {where}; torch {machine.get('torch', '?')} ({machine.get('torch_threads', '?')} threads); "
             f"device {info.get('device', '?')}; {results.get('datetime', '')}", "",
             "Matmul rate (the yardstick, same run): "
             + ", ".join(f"{p} {r:,.0f} GFLOP/s" for p, r in rates.items()), "",
             "| task | implementation | median (ms) | images/s | vs official eager fp32 | vs official compiled "
             "| GFLOP/s | share of matmul rate |", "|---|---|---|---|---|---|---|---|"]
    for r in rows(results):
        share = "-" if r["matmul_share"] is None else f"{100 * r['matmul_share']:.0f}%"
        if r["emulated"]:  # no native bf16 / fp16 matmul to compare with: the yardstick is emulated too
            share = "emulated (one round)"
        lines.append(f"| {r['task']} | {r['impl']} | {r['median_s'] * 1e3:.1f} | {r['images_per_s']:,.0f} | "
                     f"{_ratio(r['vs_official_eager'])} | {_ratio(r['vs_official_compiled'])} | "
                     f"{r['gflops']:,.0f} | {share} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from report import main

    main(table)
