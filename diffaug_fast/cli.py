"""The ``diffaug-fast`` command line: commands only. Every option comes from a typed config (diffaug_fast.config),
checked before any work starts. User errors print one line and exit 2; anything else prints a one-line summary,
writes the traceback to a log (the run folder's error.log when there is one) and exits 1; ``--debug`` shows
tracebacks instead."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

from diffaug_fast.config import (DenoiserCommand, DenoiserConfig, DiffuseOptions, EvalCommand, FidelityOptions,
                                 GradientsOptions, ReportOptions, RobustnessConfig, SampleOptions, TrainCommand,
                                 TrainConfig, build, read_config_file, train_config)
from diffaug_fast.config.options import add_arguments, given
from diffaug_fast.errors import USER_ERRORS, DiffAugError, sigterm_stops, stop_status
from diffaug_fast.ops.allocator import keep_freed_memory
from diffaug_fast.studies import commands as study_commands

PROG = "diffaug-fast"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (and exit 2), like every other user error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _folder(path: str, flag: str = "--out") -> Path:
    """An output folder: may exist as a folder, must not be a file, nor image data (it would fill it with run files)."""
    from diffaug_fast.runs.files import image_data

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DiffAugError(f"argument {flag}: {path} is a file; expected a folder")
    if what := image_data(path):
        raise DiffAugError(f"argument {flag}: {path} holds {what} and no run files: it looks like image data, not an "
                           f"output folder; choose another {flag}")
    return path


def _stopped(exc: KeyboardInterrupt, kept: str) -> SystemExit:
    """The line a command that keeps its finished work prints when a signal stops it, and its exit status."""
    how, status = stop_status(exc)
    print(f"{how}: " + (f"{kept}; run the same command again to continue" if kept else "nothing finished yet"),
          file=sys.stderr)
    return SystemExit(status)


# --- commands ----------------------------------------------------------------------------------------------------
def cmd_info(args) -> None:
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
        cuda = f"; CUDA kernels for {', '.join(ext['cuda_archs']) or '-'} ({ext['cuda_compiler']})" \
            if ext["with_cuda"] else "; no CUDA kernels"
        print(f"extension: {ext['path']}\n  compiled with {ext['cxx_compiler']}{cuda}")
    else:
        print(f"extension: NOT LOADED ({ext['error']})")
    print("backends:")
    for name, st in info["backends"].items():
        print(f"  {name:<10} {'usable' if st['usable'] else 'unavailable: ' + st['why']}")
    print("--denoiser-precision auto:")
    for device, st in info["denoiser_precision_auto"].items():
        print(f"  {device:<10} {st['choice']}: {st['why']} (an explicit fp16: {st['fp16']})")


def cmd_diffuse(args) -> None:
    """Forward-diffuse real Fashion-MNIST test images: a picture and a throughput number."""
    import torch
    from torchvision.utils import save_image

    from diffaug_fast.data import load_fashion_mnist
    from diffaug_fast.diffusion import get_schedule, q_sample
    from diffaug_fast.ops import resolve_backend

    o: DiffuseOptions = args.options[0]
    schedule = get_schedule(o.schedule, o.steps)
    x, _ = load_fashion_mnist("test", root=o.data_root, limit=o.limit)
    backend = resolve_backend(o.backend, x.device)
    out = _folder(o.out)
    out.mkdir(parents=True, exist_ok=True)
    shown = x[:o.images]
    rows = [q_sample(schedule, shown, torch.full((len(shown),), t), seed=o.seed, backend=backend) for t in o.t]
    grid = torch.stack(rows, 1).flatten(0, 1)  # image-major: each row is one image across t
    save_image(grid.add(1).div(2).clamp(0, 1), out / "forward_process.png", nrow=len(o.t), padding=1)
    start, offset = time.perf_counter(), 0
    for t in o.t:
        xt = q_sample(schedule, x, torch.full((len(x),), t), seed=o.seed, offset=offset, backend=backend)
        offset += xt.numel()
    seconds = time.perf_counter() - start
    print(f"diffused {len(x)} Fashion-MNIST test images at {len(o.t)} timesteps of the {schedule.name} schedule "
          f"with the {backend} backend: {len(x) * len(o.t) / seconds:,.0f} images/s")
    print(f"picture: {out / 'forward_process.png'} (rows: images; columns: t = {', '.join(map(str, o.t))})")


def cmd_train_denoiser(args) -> None:
    """Train (or resume) a VP or VE denoiser; export its EMA weights."""
    from diffaug_fast.devices import run_device
    from diffaug_fast.runs import files
    from diffaug_fast.train.checks import check_resume
    from diffaug_fast.train.denoiser import export_ema, train_denoiser, write_denoiser_report
    from diffaug_fast.train.loop import stopped_exit

    config, command = args.options
    out = _folder(command.out)
    args.log_dir = out
    device = run_device(command.device)  # an impossible --device fails now, not after loading data
    check_resume(out, command.resume, "train-denoiser")
    try:
        ckpt = train_denoiser(config, out, data_root=command.data_root, device=device)
    except KeyboardInterrupt as exc:
        raise stopped_exit(out, exc) from None
    config = export_ema(ckpt, config, out / files.DENOISER_WEIGHTS)  # auto options as the run resolved them
    print(f"trained {config.steps} steps on {config.channels}x{config.image_size}x{config.image_size} images; EMA "
          f"weights: {out / files.DENOISER_WEIGHTS} (+ .json)")
    report = write_denoiser_report(config, out, data_root=command.data_root, limit=command.report_limit,
                                   samples=command.report_samples, device=device)
    _print_denoiser_report(report)


def _print_denoiser_report(report: dict) -> None:
    for row in report["x0_mse_per_t"]:
        print(f"t {row['t_from']:>3}-{row['t_to']:>3}: x0 MSE {row['x0_mse']:.4f}"
              + "".join(f"; {p} {row[f'x0_mse_{p}']:.4f} ({100 * (row[f'ratio_{p}'] - 1):+.2f}%)"
                        for p in report.get("precisions", [])[1:]))
    worse = report["worse_than_mean"]
    print(f"mean-image MSE {report['mean_image_mse']:.4f}" + (f"; the denoiser is WORSE than the mean image at "
                                                              f"{worse} t-buckets" if worse else ""))
    print(f"report: {report['report']} (+ {', '.join(report['pictures'])})")


def cmd_denoiser_report(args) -> None:
    """x0 MSE per t-bucket (vs the mean image), DDIM-50 samples and DiffAug examples of any denoiser on its data."""
    from diffaug_fast.eval.denoiser_report import report_command

    o: ReportOptions = args.options[0]
    _print_denoiser_report(report_command(o, _folder(o.out)))


def cmd_train(args) -> None:
    """The main job: train a classifier (DiffAug, or a noisy / DA classifier), evaluate it, write the report."""
    from diffaug_fast.train.main import train_command

    config, command = args.options
    args.log_dir = _folder(command.out)
    train_command(config, command)


def cmd_sample(args) -> None:
    from diffaug_fast.eval.guidance import batches_kept, sample_command

    o: SampleOptions = args.options[0]
    args.log_dir = _folder(o.out)
    try:
        sample_command(o)
    except KeyboardInterrupt as exc:
        kept, batches, folder = batches_kept(o)
        raise _stopped(exc, f"{kept} of {batches} batches kept in {folder}" if kept else "") from None


def cmd_fidelity(args) -> None:
    """FID / IS / KID of a samples.npz against real test images, and a judge's accuracy on them."""
    from diffaug_fast.eval.fidelity import fidelity_command

    fidelity_command(args.options[0])


def cmd_eval(args) -> None:
    """Robustness suites on a trained clean classifier: corruptions, OOD detection, certified accuracy."""
    from diffaug_fast.devices import run_device
    from diffaug_fast.eval.robustness.suite import eval_folder, evaluate_run, finished_items
    from diffaug_fast.runs import files

    config, command = args.options
    if config.corruption_data and not (Path(config.corruption_data) / "labels.npy").exists():
        raise FileNotFoundError(f"argument --corruption-data: {config.corruption_data} is not a CIFAR-10-C-style "
                                "folder with labels.npy and one <corruption>.npy per corruption")
    device = run_device(command.device)  # an impossible --device fails before anything loads
    out = eval_folder(args.run, _folder(command.out) if command.out else None)
    args.log_dir = out if out.is_dir() else None
    try:
        result = evaluate_run(args.run, config, out_dir=command.out, baseline=command.baseline, device=device)
    except KeyboardInterrupt as exc:
        kept = finished_items(out, config)
        raise _stopped(exc, f"{kept} finished item(s) kept in {out / files.EVAL_PARTIAL}" if kept else "") from None
    line = f"clean {100 * result['clean_acc']:.1f}%"
    if "corruptions" in result:
        c = result["corruptions"]
        line += f"; corruptions: mean {100 * c['mean_acc']:.1f}%" + (
            f", DiffAug-Ensemble {100 * c['mean_de_acc']:.1f}%" if "mean_de_acc" in c else "") + (
            f", mCE {100 * c['mce']:.1f}" if "mce" in c else "")
    if "ood" in result:
        line += "; OOD AUROC (msp): " + ", ".join(f"{k} {100 * v['msp']['auroc']:.1f}"
                                                  for k, v in result["ood"].items())
    if "certify" in result:
        line += "; certified acc at r=0.25: " + ", ".join(
            f"σ={s} {100 * v['certified_acc']['0.25']:.1f}%" for s, v in result["certify"].items())
    print(line)
    print(f"report: {out / 'eval.md'}")


def cmd_export_classifier(args) -> None:
    """A run's classifier as one .safetensors + .json, loadable wherever a run folder is accepted."""
    from diffaug_fast.runs.classifiers import export_classifier

    path = export_classifier(args.run, args.out)
    print(f"exported {args.run} to {path} (+ {path.with_suffix('.json').name})")


def cmd_gradients(args) -> None:
    """Class gradients of noisy / DA classifiers on test images at several t: a PNG grid and cosines."""
    from diffaug_fast.eval.gradients import gradients_command

    o: GradientsOptions = args.options[0]
    if not o.classifier:
        raise DiffAugError("argument --classifier: give one or more `train --mode noisy|da` run folders")
    gradients_command(o, _folder(o.out))


# --- the parser --------------------------------------------------------------------------------------------------
SECTION_TITLES = {"data": "data", "model": "model", "optim": "optimisation", "diffaug": "DiffAug",
                  "eval": "evaluation at the end of training",
                  "semi": "semi-supervised and positive-unlabeled training (with --mode noisy|da)",
                  "run": "execution"}

# name: (help, handler, option classes, positional arguments)
COMMANDS = {
    "info": ("versions, compiled kernels and usable backends", cmd_info, (), ()),
    "diffuse": ("forward-diffuse Fashion-MNIST test images (picture + throughput)", cmd_diffuse, (DiffuseOptions,), ()),
    "train": ("the main job: train a classifier with DiffAug, evaluate with DiffAug-Ensemble", cmd_train,
              (TrainConfig, TrainCommand), ()),
    "train-denoiser": ("train (or resume) a diffusion model on Fashion-MNIST or your images", cmd_train_denoiser,
                       (DenoiserConfig, DenoiserCommand), ()),
    "denoiser-report": ("x0 MSE per t, samples and DiffAug examples of a denoiser", cmd_denoiser_report,
                        (ReportOptions,), ()),
    "sample": ("sample images, optionally classifier-guided (PNG grid + .npz)", cmd_sample, (SampleOptions,), ()),
    "fidelity": ("FID / IS / KID of samples (torch-fidelity, our classifier's features)", cmd_fidelity,
                 (FidelityOptions,), ()),
    "eval": ("robustness suites: corruptions (mCE), OOD detection, certified accuracy", cmd_eval,
             (RobustnessConfig, EvalCommand), ("run",)),
    "export-classifier": ("write a run's classifier as .safetensors + .json", cmd_export_classifier, (), ("run",)),
    "gradients": ("pictures of noisy / DA classifier gradients on test images", cmd_gradients, (GradientsOptions,), ()),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (help_text, func, classes, positional) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
        for arg in positional:
            p.add_argument(arg, help="a `diffaug-fast train` run folder (or an exported classifier)")
        for cls in classes:
            if cls is TrainConfig:  # what a run without the flag gets: the option's value in the default preset
                add_arguments(p, cls, titles=SECTION_TITLES, defaults=train_config("default"),
                              origin="--preset default")
            else:
                add_arguments(p, cls, titles=SECTION_TITLES)
        if name == "info":
            p.add_argument("--json", action="store_true", help="print the facts as JSON")
        if name == "train":
            p.epilog = ("Each default shown is what a run without that flag gets: --preset default's value where the "
                        "preset sets one. Another --preset (quick, diffaugmix, paper, imagenet) or a --config file "
                        "changes them; flags given override both.")
        if name == "export-classifier":
            p.add_argument("--out", required=True, help="the .safetensors file to write")
        p.set_defaults(func=func, classes=classes)
    study_commands.add_parser(sub, _Parser)  # study run|report|index (diffaug_fast/studies/commands.py)
    return parser


def _train_layers(args) -> list[tuple[str, dict]]:
    """What `train`'s flags override: the preset, then a --config file. `--resume` or `--evaluate-only` with neither
    starts from the run's own config.json (as train-denoiser's resume does): a `--preset paper` run resumes by
    `--out DIR --resume`, on another device with `--device cpu`, and re-evaluates with its own evaluation settings
    where no flag changes them."""
    from diffaug_fast.config import PRESETS, to_dict
    from diffaug_fast.runs import files

    command = given(args, TrainCommand)
    out = Path(build(TrainCommand, ("command line", command)).out)
    of_the_run = command.get("resume") or command.get("evaluate_only")
    if of_the_run and not {"preset", "config"} & set(command) and files.run_kind(out) == "train":
        from diffaug_fast.runs.classifiers import run_config

        return [(f"{out / files.CONFIG} (the run's own settings)", to_dict(run_config(out)))]
    preset, config_file = command.get("preset", "default"), command.get("config")
    layers = [(f"preset {preset!r}", PRESETS[preset])]
    if config_file:
        layers.append((f"--config {config_file}", read_config_file(config_file)))
    return layers


def _options(args) -> list:
    """The command's configs: defaults < preset < --config file < flags given (train); defaults < flags else."""
    out = []
    for cls in args.classes:
        flags = given(args, cls)
        if cls is TrainConfig:
            out.append(build(cls, *_train_layers(args), ("command line", flags)))
        else:
            out.append(build(cls, ("command line", flags)))
    return out


def _internal_error(args, err: BaseException) -> str:
    """Write the traceback to the run folder's error.log (or a temporary file); return where."""
    from diffaug_fast.runs import files

    text = "".join(traceback.format_exception(err))
    folder = getattr(args, "log_dir", None)
    if folder is not None and Path(folder).is_dir():
        path = Path(folder) / files.ERROR_LOG
        path.write_text(text)
    else:
        fd, name = tempfile.mkstemp(prefix="diffaug-fast-error-", suffix=".log")
        with open(fd, "w") as f:
            f.write(text)
        path = Path(name)
    return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv, passthrough = study_commands.split_passthrough(list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    study_commands.take_passthrough(parser, args, passthrough)
    debug = bool(getattr(args, "debug", False))
    keep_freed_memory()  # CPU steps reuse their activations' memory instead of faulting fresh pages in each time
    try:
        args.options = _options(args)
        with sigterm_stops():
            args.func(args)
    except KeyboardInterrupt as exc:
        how, status = stop_status(exc)
        print(f"{PROG}: {how}", file=sys.stderr)
        return status
    except USER_ERRORS as err:
        if debug:
            raise
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # a bug or an environment failure, not a user mistake
        if debug:
            raise
        where = _internal_error(args, err)
        summary = str(err).strip().splitlines()[0] if str(err).strip() else ""
        print(f"{PROG}: internal error: {type(err).__name__}: {summary} (traceback in {where}; --debug shows it)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
