"""The ``diffaug-fast`` command line."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

# Errors a user can cause (bad input, missing files or builds): one line, exit 2.
_USER_ERRORS = (ValueError, TypeError, FileNotFoundError, PermissionError, RuntimeError, OSError)


def _cmd_info(args) -> None:
    from diffaug_fast import build_info

    info = build_info()
    if args.json:
        print(json.dumps(info, indent=2))
        return
    ext = info["extension"]
    print(f"diffaug-fast {info['diffaug_fast']}  python {info['python']}  torch {info['torch']} "
          f"(CUDA {info['torch_cuda'] or 'none'})  triton {info['triton'] or 'not installed'}")
    print(f"CPU capability {info['cpu_capability']}, {info['cpu_threads']} threads; "
          f"GPUs: {', '.join(info['gpus']) or 'none'}")
    if ext["loaded"]:
        archs = ", ".join(ext["cuda_archs"]) or "-"
        print(f"extension: {ext['path']}\n  compiled with {ext['cxx_compiler']}"
              f"{'; CUDA kernels for ' + archs + ' (' + ext['cuda_compiler'] + ')' if ext['with_cuda'] else '; no CUDA kernels'}")
    else:
        print(f"extension: NOT LOADED ({ext['error']})")
    print("backends:")
    for name, st in info["backends"].items():
        print(f"  {name:<10} {'usable' if st['usable'] else 'unavailable: ' + st['why']}")


def _parse_int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--t expects comma-separated integers, got {text!r}") from None


def _cmd_diffuse(args) -> None:
    """Forward-diffuse real Fashion-MNIST test images: a picture and a throughput number."""
    from torchvision.utils import save_image

    from diffaug_fast.data import load_fashion_mnist
    from diffaug_fast.diffusion import get_schedule, q_sample
    from diffaug_fast.ops import resolve_backend

    schedule = get_schedule(args.schedule, args.steps)
    ts = _parse_int_list(args.t)
    x, _ = load_fashion_mnist("test", root=args.data_root, limit=args.limit)
    backend = resolve_backend(args.backend, x.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    shown = x[: args.images]
    rows = [q_sample(schedule, shown, torch.full((len(shown),), t), seed=args.seed, backend=backend) for t in ts]
    grid = torch.stack(rows, 1).flatten(0, 1)  # image-major: each row is one image across t
    save_image(grid.add(1).div(2).clamp(0, 1), out / "forward_process.png", nrow=len(ts), padding=1)

    start = time.perf_counter()
    offset = 0
    for t in ts:
        xt = q_sample(schedule, x, torch.full((len(x),), t), seed=args.seed, offset=offset, backend=backend)
        offset += xt.numel()
    seconds = time.perf_counter() - start
    n = len(x) * len(ts)
    print(f"diffused {len(x)} Fashion-MNIST test images at {len(ts)} timesteps of the {schedule.name} schedule "
          f"with the {backend} backend: {n / seconds:,.0f} images/s")
    print(f"picture: {out / 'forward_process.png'} (rows: images; columns: t = {', '.join(map(str, ts))})")


def _cmd_train_denoiser(args) -> None:
    """Train (or resume) the VP denoiser on Fashion-MNIST; export its EMA weights."""
    from diffaug_fast.train.denoiser import DenoiserConfig, export_ema, train_denoiser

    if args.kind != "vp":
        raise ValueError("--kind ve is not implemented yet; only 'vp' can be trained so far")
    config = DenoiserConfig(schedule=args.schedule, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                            seed=args.seed)
    out = Path(args.out)
    try:
        ckpt = train_denoiser(config, out, data_root=args.data_root, limit=args.limit)
    except KeyboardInterrupt:
        print(f"interrupted: saved {out / 'checkpoint.pt'}; run the same command to resume", file=sys.stderr)
        raise SystemExit(130) from None
    export_ema(ckpt, config, out / "ema.safetensors")
    print(f"trained {config.steps} steps; EMA weights: {out / 'ema.safetensors'} (+ .json)")


def _cmd_denoiser_report(args) -> None:
    """x0 MSE per t-bucket, DDIM-50 samples and DiffAug examples of a denoiser."""
    from diffaug_fast.denoiser_report import write_report
    from diffaug_fast.pretrained import pretrained

    report = write_report(pretrained(args.model), args.out, limit=args.limit, seed=args.seed)
    for row in report["x0_mse_per_t"]:
        print(f"t {row['t_from']:>3}-{row['t_to']:>3}: x0 MSE {row['x0_mse']:.4f}")
    print(f"pictures in {args.out}: {', '.join(report['pictures'])}")


def _cmd_sample(args) -> None:
    """Unconditional samples of an embedded denoiser: PNG grid + .npz."""
    import numpy as np
    from torchvision.utils import save_image

    from diffaug_fast.pretrained import pretrained
    from diffaug_fast.sample import sample

    denoiser = pretrained(args.model)
    net = torch.compile(denoiser.net) if args.compile else denoiser.net
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    images = sample(lambda x, t: net(x, t), (args.num, 1, 28, 28), denoiser.schedule, steps=args.steps,
                    mode=args.mode, eta=args.eta, seed=args.seed)
    seconds = time.perf_counter() - start
    save_image(images.add(1).div(2).clamp(0, 1), out / "samples.png", nrow=int(args.num**0.5 + 0.5), padding=1)
    np.savez_compressed(out / "samples.npz",
                        images=((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy())
    print(f"{args.num} samples ({args.mode}, {args.steps}, seed {args.seed}) in {seconds:.1f} s "
          f"({args.num / seconds:.1f} images/s): {out / 'samples.png'}, {out / 'samples.npz'}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffaug-fast", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="versions, compiled kernels and usable backends")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("diffuse", help="forward-diffuse Fashion-MNIST test images (picture + throughput)")
    p.add_argument("--schedule", default="linear", choices=["linear", "cosine", "ve"])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--t", default="0,100,200,300,400,500,600,700,800,900", help="comma-separated timesteps")
    p.add_argument("--images", type=int, default=8, help="images in the picture")
    p.add_argument("--limit", type=int, default=None, help="use only the first N test images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default=None, help="reference | cpu | cuda | triton (default: by device)")
    p.add_argument("--data-root", default=None, help="folder with the Fashion-MNIST IDX files")
    p.add_argument("--out", default="runs/diffuse")
    p.set_defaults(func=_cmd_diffuse)

    p = sub.add_parser("train-denoiser", help="train (or resume) the embedded Fashion-MNIST diffusion model")
    p.add_argument("--kind", default="vp", choices=["vp", "ve"])
    p.add_argument("--schedule", default="linear", choices=["linear", "cosine"])
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", default="runs/denoiser-vp", help="run folder; an existing checkpoint there is resumed")
    p.set_defaults(func=_cmd_train_denoiser)

    p = sub.add_parser("denoiser-report", help="x0 MSE per t, samples and DiffAug examples of an embedded denoiser")
    p.add_argument("--model", default="fmnist")
    p.add_argument("--limit", type=int, default=2000, help="test images used for the MSE")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/denoiser-report")
    p.set_defaults(func=_cmd_denoiser_report)

    p = sub.add_parser("sample", help="sample images from an embedded denoiser (PNG grid + .npz)")
    p.add_argument("--model", default="fmnist")
    p.add_argument("--num", type=int, default=64)
    p.add_argument("--steps", default="ddim50", help="respacing: ddimN, N, or comma-separated section counts")
    p.add_argument("--mode", default="ddim", choices=["ddim", "ddpm"])
    p.add_argument("--eta", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compile", action="store_true", help="torch.compile the network")
    p.add_argument("--out", default="runs/samples")
    p.set_defaults(func=_cmd_sample)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("diffaug-fast: interrupted", file=sys.stderr)
        return 130
    except _USER_ERRORS as err:
        if args.debug:
            raise
        print(f"diffaug-fast: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
