"""What one DiffAug training step costs on this machine, by part: the frozen denoiser's DiffAug pass (compiled, at
the run's precision) per image at several batch sizes, and the default classifier's forward + backward + SGD step
per image. The main job's recipe (--preset default) is sized from these.

A measurement, not a study (it trains nothing); run it alone on the machine:
    python benchmarks/step_costs.py [--out docs/results/main_job/step_costs.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from diffaug_fast.augment import FastNet, diffuse_and_denoise
from diffaug_fast.models.classifiers import build_classifier
from diffaug_fast.runs.weights import load_denoiser


def cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def per_image_ms(fn, images: int, repeats: int) -> float:
    fn(), fn()  # compile / warm the allocator
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return 1000 * (time.perf_counter() - start) / repeats / images


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="docs/results/main_job/step_costs.json")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    cpu = torch.device("cpu")
    out = {"machine": f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}",
           "threads": torch.get_num_threads(), "denoiser_ms_per_image": {}, "classifier_ms_per_image": {}}
    for name in ("fmnist", "fmnist-v"):
        den = load_denoiser(name, cpu, None)
        net = FastNet(den, compile=True, device=cpu, precision="fp32")
        for batch in (16, 32, 128):
            x = torch.rand(batch, 1, 28, 28) * 2 - 1
            t = torch.randint(0, 1000, (batch,), generator=torch.Generator().manual_seed(batch))
            ms = per_image_ms(lambda: diffuse_and_denoise(den, x, t, seed=0, offset=0, net=net), batch, args.repeats)
            out["denoiser_ms_per_image"][f"{name} batch {batch}"] = round(ms, 3)
            print(name, batch, f"{ms:.2f} ms/image", flush=True)
    torch.manual_seed(0)
    model = build_classifier("resnet-small").to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    for batch in (128, 144, 512):
        x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (batch,))

        def step():
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        ms = per_image_ms(step, batch, args.repeats)
        out["classifier_ms_per_image"][f"resnet-small train step, batch {batch}"] = round(ms, 3)
        print("classifier", batch, f"{ms:.3f} ms/image", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
