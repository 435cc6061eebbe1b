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


def _parse_int_list(text: str, option: str = "--t") -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{option} expects comma-separated integers, got {text!r}") from None


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
    """Train (or resume) a VP or VE denoiser on Fashion-MNIST; export its EMA weights."""
    from diffaug_fast.train.denoiser import DenoiserConfig, export_ema, train_denoiser, unet_for

    if args.data != "fmnist" and not Path(args.data).is_dir():
        raise FileNotFoundError(f"--data {args.data}: expected 'fmnist' or a folder with one sub-folder per class")
    config = DenoiserConfig(kind=args.kind, data=args.data, schedule=args.schedule, steps=args.steps,
                            batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                            unet=unet_for(args.image_size, args.channels))
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
    from diffaug_fast.eval.denoiser_report import write_report
    from diffaug_fast.runs.weights import pretrained

    report = write_report(pretrained(args.model), args.out, limit=args.limit, seed=args.seed)
    for row in report["x0_mse_per_t"]:
        print(f"t {row['t_from']:>3}-{row['t_to']:>3}: x0 MSE {row['x0_mse']:.4f}")
    print(f"pictures in {args.out}: {', '.join(report['pictures'])}")


def _class_labels(spec: str, names: list[str], num: int) -> torch.Tensor:
    """``--class``: an index, a class name, or ``all`` (the classes in turn, equally often)."""
    if spec == "all":
        return torch.arange(num) % len(names)
    if spec in names:
        return torch.full((num,), names.index(spec), dtype=torch.long)
    try:
        k = int(spec)
    except ValueError:
        k = -1
    if not 0 <= k < len(names):
        raise ValueError(f"--class {spec!r}: expected 'all', an index 0..{len(names) - 1} or a class name "
                         f"({', '.join(names)})")
    return torch.full((num,), k, dtype=torch.long)


def _cmd_sample(args) -> None:
    """Samples of a denoiser, optionally classifier-guided: PNG grid + .npz."""
    import numpy as np
    from torchvision.utils import save_image

    from diffaug_fast.diffusion.sampling import eps_model, sample
    from diffaug_fast.train.classifier import load_denoiser

    if args.num < 1:
        raise ValueError(f"--num must be a positive integer, got {args.num}")
    denoiser = load_denoiser(args.model)
    shape = denoiser.image_shape or (1, 28, 28)
    if args.compile:
        denoiser.net = torch.compile(denoiser.net)
    model, chain = eps_model(denoiser)
    guidance, labels = None, None
    if args.classifier:
        from diffaug_fast.diffusion.sampling import classifier_guidance
        from diffaug_fast.train.classifier import classifier_classes, load_run_classifier

        classifier, cfg = load_run_classifier(args.classifier)
        if cfg.mode == "clean":
            raise ValueError(f"--classifier {args.classifier}: a clean-image classifier cannot guide sampling; train "
                             "one with `diffaug-fast train --mode noisy` or `--mode da`")
        if cfg.denoiser != args.model and {cfg.denoiser, args.model} != {"fmnist", "fmnist-vp"}:
            raise ValueError(f"--classifier {args.classifier} was trained with the {cfg.denoiser!r} diffusion model; "
                             f"sample with --model {cfg.denoiser}")
        if args.class_ is None:
            raise ValueError("--classifier needs --class (an index, a class name, or 'all')")
        num_classes = classifier.net.fc.out_features
        labels = _class_labels(args.class_, classifier_classes(args.classifier, num_classes), args.num)
        index = denoiser.schedule.timesteps  # the classifier takes grid indices, the sampler passes timesteps
        guidance = classifier_guidance(lambda x, t: classifier(x, torch.searchsorted(index, t)), labels)
    elif args.class_ is not None:
        raise ValueError("--class needs --classifier (a `train --mode noisy|da` run that guides the sampler)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    images = sample(model, (args.num, *shape), chain, steps=args.steps, mode=args.mode, eta=args.eta,
                    seed=args.seed, guidance=guidance, scale=args.scale, progress=True)
    seconds = time.perf_counter() - start
    # --class all: one column per class; otherwise a square grid
    nrow = int(labels.max()) + 1 if args.class_ == "all" else int(args.num**0.5 + 0.5)
    save_image(images.add(1).div(2).clamp(0, 1), out / "samples.png", nrow=nrow, padding=1)
    extra = {"labels": labels.numpy()} if labels is not None else {}
    np.savez_compressed(out / "samples.npz",
                        images=((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy(), **extra)
    print(f"{args.num} samples ({args.mode}, {args.steps}, seed {args.seed}) in {seconds:.1f} s "
          f"({args.num / seconds:.1f} images/s): {out / 'samples.png'}, {out / 'samples.npz'}")


def _train_worker(config, out, progress):
    from diffaug_fast.train.classifier import train_classifier

    train_classifier(config, out, progress=progress)


def _cmd_train(args) -> None:
    """Train a classifier with DiffAug on Fashion-MNIST, evaluate it (incl. DiffAug-Ensemble), write the report."""
    from diffaug_fast.train.classifier import config_from_preset, train_classifier
    from diffaug_fast.train.distributed import init_from_env, launch
    from diffaug_fast.train.report import write_report

    de = None if args.de_timesteps is None else _parse_int_list(args.de_timesteps, "--de-timesteps")
    config = config_from_preset(args.preset, data=args.data, image_size=args.image_size, channels=args.channels,
                                mode=args.mode, fusion=args.fusion, model=args.model, norm=args.norm, epochs=args.epochs,
                                batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                                lr_schedule=args.lr_schedule, diffaug=args.diffaug, augmix=args.augmix or None,
                                t_min=args.t_min, t_max=args.t_max, denoiser=args.denoiser, ema_decay=args.ema,
                                amp=args.amp, compile=args.compile, seed=args.seed, train_limit=args.train_limit,
                                eval_limit=args.eval_limit, de_timesteps=de, device=args.device, ssl=args.ssl or None,
                                pu=args.pu or None, labels_per_class=args.labels_per_class,
                                consistency=None if args.consistency is None else args.consistency == "on",
                                tc_radius=args.tc_radius, tc_noise=args.tc_noise, tc_target=args.tc_target,
                                tc_weight=args.tc_weight, tc_rampup=args.tc_rampup, tc_threshold=args.tc_threshold,
                                positive=None if args.positive is None else _parse_int_list(args.positive, "--positive"),
                                prior=args.prior, pu_loss=args.pu_loss)
    out = Path(args.out)
    from diffaug_fast.runs.checkpoint import checkpoint_exists

    if checkpoint_exists(out / "checkpoint.pt") and not args.resume:
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    if args.compare and not (Path(args.compare) / "metrics.json").exists():
        raise FileNotFoundError(f"--compare {args.compare}: no metrics.json there (not a finished run)")
    try:
        if args.nproc > 1:
            launch(_train_worker, args.nproc, config, out, True)
        else:
            init_from_env()
            train_classifier(config, out)
    except KeyboardInterrupt:
        print(f"interrupted: saved {out / 'checkpoint.pt'}; add --resume to continue", file=sys.stderr)
        raise SystemExit(130) from None
    from diffaug_fast.train.distributed import world_rank

    if world_rank() != 0:
        return
    metrics = json.loads((out / "metrics.json").read_text())
    report = write_report(out, args.compare)
    if "acc_per_t_bucket" in metrics:
        print(f"{config.mode} classifier: accuracy on {metrics['eval_images']} noisy test images per t-bucket: "
              + ", ".join(f"{r['t_from']}-{r['t_to']}: {100 * r['acc']:.1f}%" for r in metrics["acc_per_t_bucket"])
              + f"; mean over t {100 * metrics['mean_acc_over_t']:.1f}%"
              + (f", mean F1 {metrics['mean_f1_over_t']:.3f}" if "mean_f1_over_t" in metrics else ""))
        if "tc_disagreement" in metrics:
            d = metrics["tc_disagreement"]
            print(f"top class changes between t and t' (|t - t'| <= {d['radius']}) on {100 * d['top_class_changed']:.1f}% "
                  f"of test images")
        print(f"report: {report}")
        return
    print(f"test accuracy {100 * metrics['clean_acc_full_test']:.2f}% (full test set); on {metrics['eval_images']} "
          f"test images: clean {100 * metrics['clean_acc']:.2f}%"
          + (f", DiffAug-Ensemble {100 * metrics['de_acc']:.2f}%" if "de_acc" in metrics else "")
          + f"; noisy {100 * metrics['noisy_acc']:.2f}%"
          + (f", noisy + DiffAug-Ensemble {100 * metrics['noisy_de_acc']:.2f}%" if "noisy_de_acc" in metrics else ""))
    print(f"report: {report}")


def _cmd_fidelity(args) -> None:
    """FID / IS / KID of a samples.npz against real test images, and a judge's accuracy on them."""
    import numpy as np

    from diffaug_fast.data import load_dataset
    from diffaug_fast.eval.fidelity import fidelity_metrics
    from diffaug_fast.train.classifier import accuracy, load_run_classifier

    path = Path(args.samples)
    if not path.exists():
        raise FileNotFoundError(f"--samples {path} does not exist (write one with `diffaug-fast sample`)")
    data = np.load(path)
    if "images" not in data:
        raise ValueError(f"--samples {path} has no 'images' array")
    generated = torch.from_numpy(data["images"])
    if args.reference != "fmnist" and not Path(args.reference).is_dir():
        raise FileNotFoundError(f"--reference {args.reference}: expected 'fmnist' or an image folder")
    _, channels, size, _ = generated.shape
    reference, _ = load_dataset(args.reference, "test", limit=args.reference_limit, image_size=size,
                                channels=channels)
    result = fidelity_metrics(generated, reference, args.extractor)
    line = (f"{len(generated)} samples vs {len(reference)} test images, features of {args.extractor}: "
            f"FID {result['frechet_inception_distance']:.3f}, IS {result['inception_score_mean']:.3f} ± "
            f"{result['inception_score_std']:.3f}, KID {result['kernel_inception_distance_mean']:.5f}")
    if "labels" in data:
        judge, _ = load_run_classifier(args.judge or args.extractor)
        acc = accuracy(judge, generated.float().div(127.5).sub(1.0), torch.from_numpy(data["labels"]))
        result["judge_accuracy"] = acc
        line += f"; judge accuracy on the requested class {100 * acc:.1f}%"
    print(line)
    if args.json:
        Path(args.json).write_text(json.dumps({k: float(v) for k, v in result.items()}, indent=2))


def _cmd_eval(args) -> None:
    """Robustness suites on a trained clean classifier: corruptions, OOD detection, certified accuracy."""
    from diffaug_fast.eval.robustness.suite import SUITES, EvalConfig, evaluate_run

    suites = list(SUITES) if args.suite == "all" else [s.strip() for s in args.suite.split(",") if s.strip()]
    de_ts = _parse_int_list(args.de_timesteps, "--de-timesteps")
    sigmas = [float(v) for v in args.sigmas.split(",") if v.strip()]
    config = EvalConfig(suites=suites, limit=args.limit, de=args.de == "on", de_timesteps=de_ts, seed=args.seed,
                        corruption_data=args.corruption_data,
                        ood_sets=[s.strip() for s in args.ood.split(",") if s.strip()],
                        certify_limit=args.certify_limit, sigmas=sigmas, n0=args.n0, n=args.n, alpha=args.alpha)
    if args.corruption_data and not (Path(args.corruption_data) / "labels.npy").exists():
        raise FileNotFoundError(f"--corruption-data {args.corruption_data}: expected a CIFAR-10-C-style folder with "
                                "labels.npy and one <corruption>.npy per corruption")
    result = evaluate_run(args.run, config, out_dir=args.out, baseline=args.baseline)
    out = Path(args.out) if args.out else Path(args.run)
    line = f"clean {100 * result['clean_acc']:.1f}%"
    if "corruptions" in result:
        c = result["corruptions"]
        line += f"; corruptions: mean {100 * c['mean_acc']:.1f}%" + (
            f", DiffAug-Ensemble {100 * c['mean_de_acc']:.1f}%" if "mean_de_acc" in c else "") + (
            f", mCE {100 * c['mce']:.1f}" if "mce" in c else "")
    if "ood" in result:
        line += "; OOD AUROC (msp): " + ", ".join(f"{k} {100 * v['msp']['auroc']:.1f}" for k, v in result["ood"].items())
    if "certify" in result:
        line += "; certified acc at r=0.25: " + ", ".join(
            f"σ={s} {100 * v['certified_acc']['0.25']:.1f}%" for s, v in result["certify"].items())
    print(line)
    print(f"report: {out / 'eval.md'}")


def _cmd_export_classifier(args) -> None:
    """A run's classifier as one .safetensors + .json, loadable wherever a run folder is accepted."""
    from diffaug_fast.train.classifier import export_classifier

    path = export_classifier(args.run, args.out)
    print(f"exported {args.run} to {path} (+ {path.with_suffix('.json').name})")


def _cmd_gradients(args) -> None:
    """Class gradients of noisy / DA classifiers on test images at several t: a PNG grid and cosines."""
    from diffaug_fast.data import load_fashion_mnist
    from diffaug_fast.eval.gradients import gradient_study, save_gradient_grid
    from diffaug_fast.train.classifier import load_denoiser, load_run_classifier

    ts = _parse_int_list(args.t)
    classifiers, denoisers = {}, set()
    for run in args.classifier:
        clf, cfg = load_run_classifier(run)
        if cfg.mode == "clean":
            raise ValueError(f"--classifier {run} is a clean-image classifier; gradients at x_t need a "
                             "`train --mode noisy|da` run")
        classifiers[f"{Path(run).name} ({cfg.mode})"] = clf
        denoisers.add(cfg.denoiser)
    if len(denoisers) != 1:
        raise ValueError(f"--classifier runs use different diffusion models ({', '.join(sorted(denoisers))})")
    denoiser = load_denoiser(denoisers.pop())
    images, labels = load_fashion_mnist("test", limit=args.images)
    study = gradient_study(classifiers, denoiser, images, labels, ts, seed=args.seed)
    out = Path(args.out)
    path = save_gradient_grid(study, images, out / "gradients.png")
    summary = {name: {t: float(c.mean()) for t, c in per_t.items()} for name, per_t in study["cosine"].items()}
    (out / "gradient_alignment.json").write_text(json.dumps(summary, indent=2))
    for name, per_t in summary.items():
        print(f"{name}: mean cos(grad, x0 - x_t) " + ", ".join(f"t={t}: {v:+.3f}" for t, v in per_t.items()))
    print(f"picture: {path} (rows: test images; columns: x0, then per t: x_t and each classifier's gradient)")


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
    p.add_argument("--data", default="fmnist", help="fmnist, or a folder of your images (one sub-folder per class)")
    p.add_argument("--image-size", type=int, default=28, help="image folders are resized to this (multiple of 4)")
    p.add_argument("--channels", type=int, default=1, choices=[1, 3], help="1: grayscale, 3: RGB")
    p.add_argument("--schedule", default="linear", choices=["linear", "cosine"])
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", default="runs/denoiser-vp", help="run folder; an existing checkpoint there is resumed")
    p.set_defaults(func=_cmd_train_denoiser)

    p = sub.add_parser("train", help="the main job: train a classifier with DiffAug, evaluate with DiffAug-Ensemble")
    p.add_argument("--preset", default="quick", help="quick (default, ~5 min on 2 CPU cores) or paper")
    p.add_argument("--data", default=None, help="fmnist (default), or a folder of your images with one sub-folder per "
                   "class (train/ and test/ inside are used if present, else every 10th image is held out)")
    p.add_argument("--image-size", type=int, default=None, help="image folders are resized to this (default 28)")
    p.add_argument("--channels", type=int, default=None, choices=[1, 3], help="image folders: 1 grayscale (default), "
                   "3 RGB")
    p.add_argument("--mode", default=None, choices=["clean", "noisy", "da"], help="clean: a classifier of images "
                   "(DiffAug training, default); noisy: a time-conditioned classifier of x_t; da: denoising-assisted, "
                   "sees x_t and the denoiser's x0_hat")
    p.add_argument("--fusion", default=None, choices=["input", "feature"], help="DA classifier: channel concat of "
                   "x_t and x0_hat (default) or time-gated feature fusion")
    p.add_argument("--diffaug", default=None, choices=["on", "off", "only"], help="on: clean + DiffAug (default); "
                   "off: baseline; only: DiffAug images alone")
    p.add_argument("--augmix", action="store_true", help="AugMix on the clean images (before DiffAug)")
    p.add_argument("--model", default=None, help="resnet-small | resnet-medium | wrn-16-4 | wrn-28-10 | resnet50 | "
                   "vit_b_16")
    p.add_argument("--norm", default=None, choices=["batch", "group"])
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="global batch (split over --nproc processes)")
    p.add_argument("--optimizer", default=None, choices=["sgd", "adamw"])
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--lr-schedule", default=None, choices=["cosine", "step", "constant"])
    p.add_argument("--t-min", type=int, default=None)
    p.add_argument("--t-max", type=int, default=None)
    p.add_argument("--denoiser", default=None, help="fmnist | fmnist-ve | path/to/ema.safetensors")
    p.add_argument("--ema", type=float, default=None, help="EMA decay of the classifier weights (0 = off)")
    p.add_argument("--amp", default=None, choices=["auto", "off", "bf16", "fp16"])
    p.add_argument("--compile", default=None, choices=["auto", "on", "off"])
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--train-limit", type=int, default=None, help="use only the first N training images")
    p.add_argument("--eval-limit", type=int, default=None, help="test images for DiffAug-Ensemble evaluation")
    p.add_argument("--de-timesteps", default=None, help="comma-separated DiffAug-Ensemble t's (default 0,50,...,450)")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument("--nproc", type=int, default=1, help="data-parallel processes on this machine")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--compare", default=None, help="another run folder (e.g. the baseline) for the report")
    g = p.add_argument_group("semi-supervised and positive-unlabeled training (with --mode noisy|da)")
    g.add_argument("--ssl", action="store_true", help="keep only --labels-per-class labels per class; the rest is "
                   "unlabeled and trained with the temporal-consistency loss")
    g.add_argument("--pu", action="store_true", help="positive-unlabeled: --labels-per-class labeled images of each "
                   "--positive class, everything else unlabeled; nnPU risk + temporal consistency")
    g.add_argument("--labels-per-class", type=int, default=None, help="labeled images per class (default 100)")
    g.add_argument("--consistency", default=None, choices=["on", "off"], help="the temporal-consistency term on "
                   "unlabeled images (default on; off = labeled-only / nnPU-only baseline)")
    g.add_argument("--tc-radius", type=int, default=None, help="t' = t + U{-R..R} (default 50)")
    g.add_argument("--tc-noise", default=None, choices=["same", "fresh"], help="x_t and x_t' share ε (default) or not")
    g.add_argument("--tc-target", default=None, choices=["lower", "higher", "both"], help="the detached side: the "
                   "prediction at the lower t (default), the higher t, or both directions")
    g.add_argument("--tc-weight", type=float, default=None, help="weight of the consistency term (default 1)")
    g.add_argument("--tc-rampup", type=int, default=None, help="steps of weight ramp-up (default 200)")
    g.add_argument("--tc-threshold", type=float, default=None, help="skip pairs whose target is less confident")
    g.add_argument("--positive", default=None, help="--pu: comma-separated positive classes, e.g. 0,2,4")
    g.add_argument("--prior", type=float, default=None, help="--pu: P(positive) (default: the true fraction)")
    g.add_argument("--pu-loss", default=None, choices=["logistic", "sigmoid"], help="--pu: nnPU's loss (default "
                   "logistic)")
    p.add_argument("--out", default="runs/train")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("fidelity", help="FID / IS / KID of samples (torch-fidelity, our classifier's features)")
    p.add_argument("--samples", required=True, help="a samples.npz written by `diffaug-fast sample`")
    p.add_argument("--extractor", default="fmnist-classifier", help="the clean classifier whose features and logits "
                   "replace Inception's: fmnist-classifier (shipped, default), a `train` run folder or an exported "
                   ".safetensors")
    p.add_argument("--judge", default=None, help="run folder of the classifier that judges guided samples' class "
                   "(default: the extractor)")
    p.add_argument("--reference", default="fmnist", help="real images to compare with: fmnist (its test set) or the "
                   "image folder the classifier was trained on (its test split)")
    p.add_argument("--reference-limit", type=int, default=10000, help="test images to compare against")
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    p.set_defaults(func=_cmd_fidelity)

    p = sub.add_parser("eval", help="robustness suites: corruptions (mCE), OOD detection, certified accuracy")
    p.add_argument("run", help="a clean-classifier `diffaug-fast train` run folder (or exported classifier)")
    p.add_argument("--suite", default="all", help="all, or a comma list of corruptions, ood, certify")
    p.add_argument("--limit", type=int, default=500, help="test images for corruptions and OOD (default 500)")
    p.add_argument("--de", default="on", choices=["on", "off"], help="also evaluate with DiffAug-Ensemble")
    p.add_argument("--de-timesteps", default="0,100,200,300,400", help="DiffAug-Ensemble t's for the suites")
    p.add_argument("--baseline", default=None, help="an evaluated baseline run folder: mCE relative to it")
    p.add_argument("--corruption-data", default=None, help="a CIFAR-10-C-style folder instead of on-the-fly "
                   "Fashion-MNIST-C")
    p.add_argument("--ood", default="digits,uniform,gaussian", help="OOD sets: digits, uniform, gaussian, folders")
    p.add_argument("--certify-limit", type=int, default=100, help="test images to certify (default 100)")
    p.add_argument("--sigmas", default="0.25,0.5", help="smoothing noise levels ([0, 1] pixel units)")
    p.add_argument("--n0", type=int, default=10, help="noise samples to pick the class")
    p.add_argument("--n", type=int, default=100, help="noise samples to bound its probability (default 100: the "
                   "largest certifiable radius is then 1.5 σ at alpha 0.001)")
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder (default: the run folder)")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("export-classifier", help="write a run's classifier as .safetensors + .json")
    p.add_argument("run", help="a `diffaug-fast train` run folder")
    p.add_argument("--out", required=True, help="the .safetensors file to write")
    p.set_defaults(func=_cmd_export_classifier)

    p = sub.add_parser("gradients", help="pictures of noisy / DA classifier gradients on test images")
    p.add_argument("--classifier", action="append", required=True, help="a `train --mode noisy|da` run folder "
                   "(repeat to compare)")
    p.add_argument("--t", default="100,300,500,700", help="comma-separated timesteps")
    p.add_argument("--images", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/gradients")
    p.set_defaults(func=_cmd_gradients)

    p = sub.add_parser("denoiser-report", help="x0 MSE per t, samples and DiffAug examples of an embedded denoiser")
    p.add_argument("--model", default="fmnist", help="fmnist (= fmnist-vp) or fmnist-ve")
    p.add_argument("--limit", type=int, default=2000, help="test images used for the MSE")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/denoiser-report")
    p.set_defaults(func=_cmd_denoiser_report)

    p = sub.add_parser("sample", help="sample images from an embedded denoiser (PNG grid + .npz)")
    p.add_argument("--model", default="fmnist", help="fmnist, fmnist-ve, or an exported ema.safetensors "
                   "(`train-denoiser`)")
    p.add_argument("--num", type=int, default=64)
    p.add_argument("--steps", default="ddim50", help="respacing: ddimN, N, or comma-separated section counts")
    p.add_argument("--mode", default="ddim", choices=["ddim", "ddpm"])
    p.add_argument("--eta", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compile", action="store_true", help="torch.compile the network")
    p.add_argument("--classifier", default=None, help="a `train --mode noisy|da` run folder: classifier guidance")
    p.add_argument("--class", dest="class_", default=None, help="with --classifier: the class to generate (index or "
                   "name), or 'all' for every class in turn")
    p.add_argument("--scale", type=float, default=1.0, help="guidance scale")
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
