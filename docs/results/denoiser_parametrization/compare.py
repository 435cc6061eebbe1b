"""eps vs v vs x0 prediction for the VP denoiser at the same short budget: one-step x̂0 MSE per t-bucket on
Fashion-MNIST test images, next to the mean training image's MSE. Writes compare.json beside this file.

    python docs/results/denoiser_parametrization/compare.py [--steps 300] [--batch-size 128] [--images 1000]

Each run is `diffaug-fast train-denoiser --parametrization P --steps S --batch-size B --seed 0` (the shipped
model's UNet, lr 2e-3, EMA/warm-up auto for S steps) through the Python API, without the report's pictures; the
EMA weights are exported and loaded back by the normal loader (load_exported), then measured with the report's
x0_mse_per_bucket (same t and noise for every model).
"""
import argparse
import json
import platform
import time
from pathlib import Path

import torch

from diffaug_fast.config import DenoiserConfig
from diffaug_fast.data import load_fashion_mnist
from diffaug_fast.eval.denoiser_report import x0_mse_per_bucket
from diffaug_fast.runs import files
from diffaug_fast.runs.weights import load_exported
from diffaug_fast.train.denoiser import export_ema, train_denoiser, with_step_defaults

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--parametrizations", default="eps,v,x0")
    p.add_argument("--runs", default="runs/denoiser_parametrization")
    args = p.parse_args()
    out = HERE / "compare.json"
    result = json.loads(out.read_text()) if out.exists() else {}
    test = load_fashion_mnist("test", limit=args.images)[0]
    train = load_fashion_mnist("train")[0]
    mean_mse = float((test - train.mean(0)).square().mean())
    result.update({"what": "one-step x0 MSE per t-bucket of VP denoisers trained with each parametrization at the "
                           "same budget (pixels in [-1, 1])",
                   "images": len(test), "mean_image_mse": mean_mse, "torch": torch.__version__,
                   "machine": f"{platform.machine()}, {torch.get_num_threads()} threads", "runs": result.get("runs", {})})
    for name in args.parametrizations.split(","):
        config = DenoiserConfig(parametrization=name, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                                checkpoint_every=args.steps)
        run_dir = Path(args.runs) / f"{name}-{args.steps}"
        start = time.perf_counter()
        ckpt = train_denoiser(config, run_dir, progress=False)
        seconds = time.perf_counter() - start
        export_ema(ckpt, config, run_dir / files.DENOISER_WEIGHTS)
        denoiser = load_exported(run_dir / files.DENOISER_WEIGHTS)
        assert denoiser.parametrization == name
        rows = x0_mse_per_bucket(denoiser, test, seed=args.seed)
        resolved = with_step_defaults(config)
        losses = [json.loads(line)["loss"] for line in (run_dir / files.METRICS_LOG).read_text().splitlines()]
        result["runs"][name] = {
            "command": f"diffaug-fast train-denoiser --parametrization {name} --steps {args.steps} --batch-size "
                       f"{args.batch_size} --seed {args.seed} --device cpu",
            "steps": args.steps, "batch_size": args.batch_size, "seed": args.seed, "lr": resolved.lr,
            "ema_decay": resolved.ema_decay, "warmup": resolved.warmup, "train_seconds": round(seconds, 1),
            "final_loss_mean_last_20": sum(losses[-20:]) / len(losses[-20:]),
            "x0_mse_per_t": [{**r, "ratio_to_mean_image": r["x0_mse"] / mean_mse} for r in rows],
            "worse_than_mean_image": sum(r["x0_mse"] > mean_mse for r in rows)}
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(name, f"{seconds:.0f} s", " ".join(f"{r['x0_mse']:.3f}" for r in rows), flush=True)


if __name__ == "__main__":
    main()
