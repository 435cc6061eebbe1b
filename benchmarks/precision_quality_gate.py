"""The precision quality gate of issue 16: one-step x̂0 MSE per t-bucket of the shipped Fashion-MNIST denoiser on
2000 Fashion-MNIST test images, the network at fp32, bf16 and fp16 (autocast), the same t and noise at each.

    python benchmarks/precision_quality_gate.py [LIMIT [P,P,... [compiled]]]
    # writes docs/results/precision/quality_gate.{json,md}

"compiled" runs the network as DiffAug runs it by default (torch.compile with frozen weights, autocast inside the
graph): on a CPU without native bf16 / fp16 the eager emulation is ~4x slower still, too slow for 2000 images.

It calls what `diffaug-fast denoiser-report --denoiser-precision fp32,bf16,fp16` calls (eval/denoiser_report.py
x0_mse_per_bucket). Quality, not speed: no timing is taken.
"""
import json
import platform
from pathlib import Path

import torch

from diffaug_fast import pretrained
from diffaug_fast.data import load_fashion_mnist
from diffaug_fast.eval.denoiser_report import x0_mse_per_bucket
from diffaug_fast.ops.backends import native_bf16

HERE = Path(__file__).resolve().parents[1] / "docs" / "results" / "precision"  # where its results live


def main(limit: int = 2000, seed: int = 0, precisions=("fp32", "bf16", "fp16"), compiled: bool = False) -> dict:
    PRECISIONS = tuple(precisions)
    assert PRECISIONS[0] == "fp32"
    torch.manual_seed(0)
    denoiser = pretrained("fmnist")
    images, _ = load_fashion_mnist("test", limit=limit)
    columns = {}
    for p in PRECISIONS:
        net = denoiser.net
        if compiled:  # a fresh graph per precision: autocast is traced into it
            denoiser.net = torch.compile(net, dynamic=False, options={"freezing": True})
        with torch.inference_mode():
            columns[p] = x0_mse_per_bucket(denoiser, images, seed=seed, precision=p)
        denoiser.net = net
    rows = []
    for k, base in enumerate(columns["fp32"]):
        row = {"t_from": base["t_from"], "t_to": base["t_to"]}
        for p in PRECISIONS:
            row[p] = columns[p][k]["x0_mse"]
            row[f"{p}_vs_fp32"] = columns[p][k]["x0_mse"] / base["x0_mse"] - 1
        rows.append(row)
    result = {"images": len(images), "seed": seed, "torch": torch.__version__, "machine": platform.processor() or
              platform.machine(), "cpu_native_bf16": native_bf16("cpu")[1], "rows": rows,
              "network": "torch.compile (inductor, frozen weights)" if compiled else "eager",
              "worst": {p: max(r[f"{p}_vs_fp32"] for r in rows) for p in PRECISIONS[1:]}}
    (HERE / "quality_gate.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Denoiser precision: one-step x̂0 MSE per t-bucket (quality gate)", "",
             f"Shipped Fashion-MNIST denoiser, {len(images)} Fashion-MNIST test images, seed {seed}, the same t and "
             f"noise at every precision; the network {result['network']}; torch {torch.__version__}. Made by `benchmarks/precision_quality_gate.py`. "
             "Gate: every bucket within +2% of fp32.", "",
             "| t | fp32 |" + "".join(f" {p} | {p} vs fp32 |" for p in PRECISIONS[1:]),
             "|---|---|" + "---|---|" * (len(PRECISIONS) - 1),
             *(f"| {r['t_from']}–{r['t_to']} | {r['fp32']:.5f} |" + "".join(
                 f" {r[p]:.5f} | {100 * r[f'{p}_vs_fp32']:+.2f}% |" for p in PRECISIONS[1:]) for r in rows), "",
             "Worst bucket: " + ", ".join(f"{p} {100 * w:+.2f}%" for p, w in result["worst"].items()) + ".", ""]
    (HERE / "quality_gate.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    import sys

    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000,
         precisions=sys.argv[2].split(",") if len(sys.argv) > 2 else ("fp32", "bf16", "fp16"),
         compiled=len(sys.argv) > 3 and sys.argv[3] == "compiled")
