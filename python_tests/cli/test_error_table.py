"""The bad-input table of docs/errors.md: every row is a case run here (Python API: the exception and its
message; CLI: exit code 2 and one line naming the option), and the doc is checked to list exactly these rows.
More op-level cases (dtypes, strides, devices, backends) are in test_errors.py and test_fuzz_ops.py.

Regenerate the doc after adding a case:  python python_tests/test_error_table.py > docs/errors.md
"""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

DOC = Path(__file__).resolve().parents[2] / "docs" / "errors.md"
CLI = [sys.executable, "-m", "diffaug_fast.cli"]


def _den():
    from diffaug_fast import pretrained

    return pretrained("fmnist")


def _x(*shape):
    return torch.randn(*shape) if shape else torch.randn(2, 1, 28, 28)


def _api_cases():
    from diffaug_fast import diffuse
    from diffaug_fast.augment import DiffAug, DiffAugEnsemble
    from diffaug_fast.runs.checkpoint import load_verified
    from diffaug_fast.data import load_image_folder
    from diffaug_fast.diffusion import linear_vp, q_sample, step_coefficients, ve_geometric
    from diffaug_fast.ops import guided_step
    from diffaug_fast.runs.weights import pretrained
    from diffaug_fast.eval.robustness.corruptions import corrupt
    from diffaug_fast.diffusion.sampling import sample
    from diffaug_fast.config import train_config

    s = linear_vp()
    return [
        ("images of the wrong rank", lambda: DiffAug(_den(), seed=0)(_x(3, 28, 28)), "argument 'x0' must be a floating-point image batch"),
        ("images of another shape than the denoiser's", lambda: DiffAug(_den(), seed=0)(_x(2, 3, 28, 28)), "this denoiser works on [1, 28, 28]"),
        ("NaN / Inf images", lambda: DiffAug(_den(), seed=0)(_x() * float("nan")), "argument 'x0' contains NaN or Inf"),
        ("integer images", lambda: diffuse(_x().int(), 1.0, 1.0, seed=0), "'x0' has dtype torch.int32"),
        ("mismatched batch sizes", lambda: q_sample(s, _x(), torch.zeros(3, dtype=torch.long), seed=0), "argument 'a' must have shape [2]"),
        ("model output of another shape", lambda: guided_step(_x(), _x(3, 1, 28, 28), step_coefficients(s, torch.zeros(2, dtype=torch.long)), mode="ddim", seed=0), "argument 'model_out' must have shape [2, 1, 28, 28]"),
        ("t out of range", lambda: q_sample(s, _x(), torch.full((2,), 1000), seed=0), "argument 't' must lie in [0, 999]"),
        ("DiffAug-Ensemble t out of range", lambda: DiffAugEnsemble(torch.nn.Identity(), _den(), [0, 1000]), "argument 'timesteps' must be a non-empty list in [0, 999]"),
        ("σ range of a VE schedule", lambda: ve_geometric(1000, 0.0, 50.0), "need 0 < sigma_min < sigma_max"),
        ("sampler step spec", lambda: sample(lambda a, b: a, (2, 1, 28, 28), s, steps="ddimX", progress=False), "argument 'steps' is 'ddimX'"),
        ("sampler mode", lambda: sample(lambda a, b: a, (2, 1, 28, 28), s, steps="ddim5", mode="euler", progress=False), "argument 'mode' is 'euler'"),
        ("unknown embedded model", lambda: pretrained("cifar"), "unknown pretrained model 'cifar'"),
        ("unknown training option value", lambda: train_config("quick", mode="fuzzy"), "argument --mode is 'fuzzy'"),
        ("unknown training option", lambda: train_config("quick", learning_rate=0.1), "unknown options learning_rate"),
        ("semi-supervised training of a clean classifier", lambda: train_config("quick", ssl=True), "add --mode noisy or --mode da"),
        ("missing image folder", lambda: load_image_folder("/nonexistent/images"), "argument 'data': /nonexistent/images is not a folder"),
        ("unknown corruption", lambda: corrupt(_x(), "rain", 1), "argument 'name' is 'rain'"),
        ("corrupted checkpoint", lambda: load_verified(_garbage_checkpoint()), "cannot be read"),
        ("unknown DDIM guidance order", lambda: guided_step(_x(), _x(), step_coefficients(s, torch.zeros(2, dtype=torch.long), mode="ddim"), mode="ddim", ddim_guidance="after", seed=0), "argument 'ddim_guidance' is 'after'; expected one of 'guided_diffusion', 'clip_after_shift'"),
        ("sampler DDIM guidance order", lambda: sample(lambda a, b: a, (2, 1, 28, 28), s, steps="ddim5", ddim_guidance="after", progress=False), "argument 'ddim_guidance' is 'after'"),
    ]


def _garbage_checkpoint():
    import tempfile

    path = Path(tempfile.mkdtemp()) / "checkpoint.pt"
    path.write_bytes(b"\x80\x04not a checkpoint")
    return path


PROGRESS_BAR = re.compile(r"\|\s*\d+/\d+ \[")  # tqdm's "| 3/40 [00:01<00:10, 2.9step/s]"

# a tiny class-conditional UNet in guided-diffusion's key layout (made by the fixture), and its flag line
RELEASED_FLAGS = ("--image_size 16 --num_channels 32 --num_res_blocks 1 --attention_resolutions 8 --class_cond True "
                  "--num_classes 3 --learn_sigma False --channel_mult 1,2 --diffusion_steps 1000 --noise_schedule linear")

CLI_CASES = [
    ("unwritable output folder", ["diffuse", "--limit", "10", "--out", "/proc/version/out"], "/proc/version"),
    ("missing training image folder", ["train", "--mode", "noisy", "--data", "/nonexistent/images"], "argument --data is '/nonexistent/images'"),
    ("existing run without --resume", ["train", "--out", "{existing}"], "already holds a run; pass --resume"),
    ("--class without a guidance classifier", ["sample", "--class", "3", "--num", "1"], "--class needs --classifier"),
    ("clean classifier given to `gradients`", ["gradients", "--classifier", "{existing}"], "is a clean-image classifier"),
    ("unknown evaluation suite", ["eval", "{existing}", "--suite", "speed"], "--suite: unknown speed"),
    ("samples file missing", ["fidelity", "--samples", "/nonexistent.npz"], "argument --samples: /nonexistent.npz does not exist"),
    ("PU without positive classes", ["train", "--mode", "noisy", "--pu"], "--pu needs --positive"),
    ("learning rate NaN", ["train", "--lr", "nan"], "argument --lr must be a finite number, got nan"),
    ("zero processes", ["train", "--nproc", "0"], "argument --nproc must be > 0, got 0"),
    ("negative processes", ["train", "--nproc", "-2"], "argument --nproc must be > 0, got -2"),
    ("negative guidance scale", ["sample", "--scale", "-5"], "argument --scale must be >= 0, got -5.0"),
    ("zero evaluation images", ["train", "--eval-limit", "0"], "argument --eval-limit must be > 0 or 'all', got 0"),
    ("zero training images", ["train", "--train-limit", "0"], "argument --train-limit must be > 0 or 'all', got 0"),
    ("DiffAug-Ensemble t past the denoiser's chain (before training)", ["train", "--de-timesteps", "0,2000", "--train-limit", "64", "--batch-size", "32", "--out", "{fresh}"], "argument --de-timesteps: [2000] outside the denoiser's timesteps 0..999"),
    ("--de-denoiser that does not exist (before training)", ["train", "--de-denoiser", "/nonexistent.safetensors", "--train-limit", "64", "--batch-size", "32", "--out", "{fresh}"], "argument --de-denoiser: /nonexistent.safetensors does not exist"),
    ("--de-denoiser for a noisy / DA classifier", ["train", "--mode", "da", "--de-denoiser", "fmnist-v"], "argument --de-denoiser sets a clean classifier's DiffAug-Ensemble"),
    ("eval --denoiser that does not exist", ["eval", "{existing}", "--denoiser", "/nonexistent.safetensors"], "argument --denoiser: /nonexistent.safetensors does not exist"),
    ("--resume with another --epochs", ["train", "--config", "{existing}/config.json", "--out", "{existing}", "--resume", "--epochs", "3"], "a run's --epochs is fixed"),
    ("--resume on a folder without a run", ["train", "--resume", "--out", "{fresh}"], "holds no checkpoint to resume"),
    ("--resume and --evaluate-only together", ["train", "--resume", "--evaluate-only", "--out", "{existing}"], "choose one of --resume"),
    ("--evaluate-only on a folder without a run", ["train", "--evaluate-only", "--out", "{fresh}"], "holds no finished `diffaug-fast train` run"),
    ("zero denoiser training steps", ["train-denoiser", "--steps", "0"], "argument --steps must be > 0, got 0"),
    ("unknown denoiser parametrization", ["train-denoiser", "--parametrization", "score"], "argument --parametrization: invalid choice: 'score'"),
    ("v/x0/eps asked of a VE denoiser", ["train-denoiser", "--kind", "ve", "--parametrization", "v", "--out", "{fresh}"], "argument --parametrization v is for --kind vp"),
    ("existing denoiser run without --resume", ["train-denoiser", "--out", "{denoiser}"], "already holds a run; pass --resume"),
    ("denoiser resumed with another --lr", ["train-denoiser", "--out", "{denoiser}", "--resume", "--steps", "1", "--limit", "32", "--batch-size", "16", "--lr", "0.1"], "different settings (lr: 0.002 -> 0.1)"),
    ("--out naming a file", ["train", "--out", "{file}"], "argument --out: {file} is a file; expected a folder"),
    ("--device cuda without a GPU", ["train", "--device", "cuda"], "argument --device is 'cuda' but this machine has 0 CUDA GPUs"),
    ("sample --device cuda without a GPU", ["sample", "--device", "cuda", "--num", "1", "--out", "{fresh}"], "argument --device is 'cuda' but this machine has 0 CUDA GPUs"),
    ("eval --device cuda without a GPU", ["eval", "{existing}", "--device", "cuda"], "argument --device is 'cuda' but this machine has 0 CUDA GPUs"),
    ("gradients --device cuda without a GPU", ["gradients", "--classifier", "{existing}", "--device", "cuda", "--out", "{fresh}"], "argument --device is 'cuda' but this machine has 0 CUDA GPUs"),
    ("denoiser-report --device cuda without a GPU", ["denoiser-report", "--device", "cuda", "--out", "{fresh}"], "argument --device is 'cuda' but this machine has 0 CUDA GPUs"),
    ("fidelity --device cuda without a GPU", ["fidelity", "--device", "cuda"], "argument --device is 'cuda' but this machine has 0 CUDA GPUs"),
    ("a --device that names no device", ["sample", "--device", "gpu0", "--out", "{fresh}"], "argument --device is 'gpu0'; expected auto, cpu, cuda or cuda:N"),
    ("truncated .safetensors as --denoiser", ["train", "--denoiser", "{truncated}", "--train-limit", "64", "--batch-size", "32", "--out", "{fresh}"], "could not be read as a .safetensors file"),
    ("truncated .safetensors as sample --model", ["sample", "--model", "{truncated}", "--num", "1", "--out", "{fresh}"], "could not be read as a .safetensors file"),
    ("a flag that does not exist", ["train", "--learning-rate", "0.1"], "unrecognized arguments: --learning-rate"),
    ("a value of the wrong type", ["train", "--epochs", "two"], "argument --epochs: expected an integer, got 'two'"),
    ("a --config file that is not JSON", ["train", "--config", "{file}"], "is not valid JSON"),
    ("a truncated image in the training folder (read by a loader worker)", ["train", "--data", "{bad_images}", "--val-size", "0", "--workers", "2", "--batch-size", "18", "--diffaug", "off", "--de-timesteps", "", "--out", "{fresh}"], "cannot read image"),
    ("a class folder without images", ["train", "--data", "{empty_class}", "--out", "{fresh}"], "class folder 'empty' in"),
    ("a missing CIFAR batch file", ["train", "--data", "cifar10:{cifar_missing}", "--image-size", "32", "--channels", "3", "--out", "{fresh}"], "batch file"),
    ("negative loader workers", ["train", "--workers", "-1"], "argument --workers must be >= 0"),
    ("unknown guided-DDIM order", ["sample", "--ddim-guidance", "after"], "argument --ddim-guidance: invalid choice: 'after'"),
    ("unknown denoiser precision", ["train", "--denoiser-precision", "int8"], "argument --denoiser-precision: invalid choice: 'int8'"),
    ("a classifier name that exists nowhere", ["train", "--model", "resnt50"], "neither ours nor torchvision's; did you mean resnet50"),
    ("--norm group with a torchvision model", ["train", "--model", "resnet18", "--norm", "group"], "argument --norm group is for our classifiers"),
    ("--init that is not a state dict file", ["train", "--init", "weights.bin"], "expected a state dict file ending in .pth, .pt, .safetensors"),
    ("--lr-step-epochs without the step schedule", ["train", "--lr-step-epochs", "30"], "needs --lr-schedule step, got cosine"),
    ("a DiffAug share outside (0, 1]", ["train", "--diffaug-fraction", "0"], "argument --diffaug-fraction must be in (0, 1], got 0.0"),
    ("a share of DiffAug steps outside (0, 1]", ["train", "--diffaug-until", "1.5"], "argument --diffaug-until must be in (0, 1], got 1.5"),
    ("a DiffAug copy weight that is not positive", ["train", "--diffaug-weight", "0"], "argument --diffaug-weight must be > 0 and <= 100, got 0.0"),
    ("--jsd without --augmix", ["train", "--jsd", "12"], "argument --jsd 12.0 is AugMix's consistency term: add --augmix"),
    ("a released checkpoint without its flag line", ["train", "--denoiser", "{released}"], "needs the flag line it was trained with"),
    ("flags that do not match the checkpoint", ["train", "--denoiser", "{released}", "--denoiser-flags", RELEASED_FLAGS.replace("True", "False"), "--train-limit", "64", "--batch-size", "32", "--out", "{fresh}"], "unexpected keys: label_emb.weight; flags that probably differ: class_cond"),
    ("a misspelled checkpoint flag", ["train", "--denoiser", "{released}", "--denoiser-flags", "--image_sise 16", "--train-limit", "64", "--batch-size", "32", "--out", "{fresh}"], "unknown flag --image_sise"),
    ("--denoiser-flags with a shipped denoiser", ["train", "--denoiser-flags", "--image_size 28"], "--denoiser fmnist is a shipped model"),
    ("a diffusers folder without a UNet", ["train", "--denoiser", "{no_unet}", "--train-limit", "64", "--batch-size", "32", "--out", "{fresh}"], "holds no diffusers UNet"),
    ("CIFAR-10 (3x32x32, auto) with the Fashion-MNIST denoiser", ["train", "--data", "cifar10:{cifar}", "--batch-size", "16", "--out", "{fresh}"], "argument --denoiser: 'fmnist' works on 1x28x28 images but --data cifar10:{cifar} gives 3x32x32"),
    ("an RGB image folder (auto) with the Fashion-MNIST denoiser", ["train", "--data", "{rgb_images}", "--batch-size", "16", "--out", "{fresh}"], "argument --denoiser: 'fmnist' works on 1x28x28 images but --data {rgb_images} gives 3x28x28"),
    ("an image folder holding only train/", ["train", "--data", "{train_only}", "--out", "{fresh}"], "holds only train/ (no test/ or val/ beside it)"),
    ("a DiffAug copy weight past 100", ["train", "--diffaug-weight", "1e9", "--train-limit", "64", "--batch-size", "32", "--epochs", "1", "--out", "{fresh}"], "argument --diffaug-weight must be > 0 and <= 100, got 1000000000.0"),
    ("a validation split neither a whole number nor a fraction", ["train", "--val-size", "2.5"], "argument --val-size must be 0, a fraction in (0, 1) or a whole number of images, got 2.5"),
    ("a validation split holding every training image", ["train", "--val-size", "60000", "--out", "{fresh}"], "argument --val-size 60000 leaves no training images: the training split holds 60000"),
    ("a loss that becomes NaN while training", ["train", "--lr", "1e30", "--diffaug", "off", "--train-limit", "64", "--batch-size", "32", "--de-timesteps", "", "--out", "{diverged}"], "training diverged: the loss is nan at step"),
    ("--out holding class sub-folders of images", ["train", "--out", "{photos}"], "argument --out: {photos} holds class sub-folders of images and no run files"),
    ("sample --out holding images", ["sample", "--num", "1", "--out", "{photos}/a"], "argument --out: {photos}/a holds images and no run files"),
    ("a samples file that is not a .npz", ["fidelity", "--samples", "{file}"], "argument --samples: {file} is not a .npz of samples (expected the samples.npz `diffaug-fast sample` writes)"),
    ("train --out that cannot be created", ["train", "--out", "/proc/x"], "argument --out: cannot create the folder /proc/x"),
    ("train-denoiser --out that cannot be created", ["train-denoiser", "--out", "/proc/x"], "argument --out: cannot create the folder /proc/x"),
    ("sample --steps past the denoiser's chain", ["sample", "--steps", "ddim2000", "--num", "1", "--out", "{fresh}"], "argument --steps is 'ddim2000': cannot take exactly 2000 evenly strided steps from 1000; expected at most the denoiser's 1000 steps"),
    ("a --denoiser that is no denoiser", ["train", "--denoiser", "{file}", "--train-limit", "64", "--batch-size", "32", "--out", "{fresh}"], "argument --denoiser: {file} is not a denoiser; expected fmnist | fmnist-v | fmnist-ve, a train-denoiser export"),
    ("train --out on a train-denoiser run", ["train", "--out", "{denoiser}"], "is a `diffaug-fast train-denoiser` denoiser run folder, not a `diffaug-fast train` classifier run"),
    ("train --resume on a train-denoiser run", ["train", "--resume", "--out", "{denoiser}"], "is a `diffaug-fast train-denoiser` denoiser run folder"),
    ("train-denoiser --resume on a classifier run", ["train-denoiser", "--resume", "--steps", "1", "--limit", "32", "--batch-size", "16", "--out", "{existing}"], "is a `diffaug-fast train` classifier run folder, not a `diffaug-fast train-denoiser` denoiser run"),
    ("--resume on a run stopped before its first checkpoint", ["train", "--resume", "--out", "{started}"], "holds no checkpoint (the run stopped before its first one); run the same command without --resume to start it again"),
    ("a study file that does not exist", ["study", "run", "/nonexistent.toml"], "study file /nonexistent.toml does not exist"),
    ("a study file that is not TOML", ["study", "run", "{study_broken}"], "study file {study_broken} is not valid TOML"),
    ("a study whose name is not its file's", ["study", "run", "{study_renamed}"], "[study] name: is 'main' but the file is renamed.toml"),
    ("a study comparing a variant it does not declare", ["study", "run", "{study_undeclared}"], "[comparisons.0] a: names variant 'w05', which the study does not declare; declared: default, baseline"),
    ("a study's \"keeps\" claim without its margin", ["study", "report", "{study_keeps}"], "[comparisons.0] margin: direction keeps needs a margin > 0"),
    ("a study variant's option that `train` refuses", ["study", "run", "{study_ok}", "--runs", "{fresh}", "--", "--diffaug", "of"], "variant default's options: argument --diffaug: invalid choice: 'of'"),
    ("a study's run folder made with other options", ["study", "run", "{study_ok}", "--runs", "{study_runs}"], "1 existing run folder(s) were made with other options than the study declares: run default seed 0"),
    ("zero study jobs", ["study", "run", "{study_ok}", "--jobs", "0"], "argument --jobs must be > 0, got 0"),
    ("an optional evaluation the study does not declare", ["study", "run", "{study_ok}", "--runs", "{fresh}", "--optional", "certify"], "argument --optional: certify is not an optional evaluation"),
    ("words after the study file without --", ["study", "run", "{study_ok}", "cuda"], "unexpected cuda: options for every run go after --"),
    ("a study report before any run", ["study", "report", "{study_ok}", "--runs", "{fresh}", "--results", "{fresh}"], "runs.json does not exist: run `diffaug-fast study run"),
    ("a study index of a missing folder", ["study", "index", "--experiments", "/nonexistent"], "argument --experiments: /nonexistent is not a folder of study files"),
]


def markdown() -> str:
    lines = ["# Bad input: what each case says", "",
             "Every row is run by `python_tests/cli/test_error_table.py` (CLI rows: exit code 2, one line on "
             "stderr, no traceback, before any work starts; `--debug` shows the traceback). Anything that is not a "
             "user error exits 1 with a one-line summary and writes its traceback to the run folder's `error.log` "
             "(`python_tests/cli/test_cli_errors.py`). Op-level cases — dtypes, strides, devices, backends, NaN "
             "coefficients — are in `python_tests/ops/test_errors.py`; checkpoint faults (SIGKILL, corruption, full "
             "disk) in `python_tests/runs/test_faults.py`.", "",
             "| where | case | the error says |", "|---|---|---|"]
    lines += [f"| Python | {case} | `{match}` |" for case, _, match in _api_cases()]
    lines += [f"| CLI `{args[0]}` | {case} | `{match}` |" for case, args, match in CLI_CASES]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("index", range(20))
def test_python_case(index):
    cases = _api_cases()
    assert len(cases) == 20
    case, call, match = cases[index]
    with pytest.raises((ValueError, TypeError, FileNotFoundError)) as info:
        call()
    assert match in str(info.value), (case, str(info.value))


@pytest.fixture(scope="module")
def existing_run(tmp_path_factory):
    """Paths the CLI rows refer to: a finished run, a denoiser run, a fresh folder, a plain file, a truncated
    denoiser export."""
    import shutil

    from diffaug_fast.runs.weights import WEIGHTS_DIR

    base = tmp_path_factory.mktemp("paths")
    denoiser = base / "denoiser"
    out = subprocess.run(CLI + ["train-denoiser", "--steps", "1", "--limit", "32", "--batch-size", "16",
                                "--report-limit", "64", "--report-samples", "4", "--out", str(denoiser)],
                         capture_output=True, text=True, timeout=600)  # a small report: 2000 images took minutes
    assert out.returncode == 0, out.stderr
    (base / "file.txt").write_text("not a folder, not JSON\n")
    data = (WEIGHTS_DIR / "fmnist_vp.safetensors").read_bytes()
    (base / "trunc.safetensors").write_bytes(data[:len(data) // 2])
    shutil.copy(WEIGHTS_DIR / "fmnist_vp.json", base / "trunc.json")
    existing = _finished_run(tmp_path_factory)
    return {"existing": str(existing), "denoiser": str(denoiser), "fresh": str(base / "fresh"),
            "file": str(base / "file.txt"), "truncated": str(base / "trunc.safetensors"), **_bad_data(base), **_shape_data(base),
            **_output_data(base), **_study_data(base, existing)}


def _bad_data(base):
    """An image folder with a truncated JPEG, one with an empty class folder, CIFAR-10 batches missing one file."""
    import numpy as np
    from PIL import Image

    for name in ("bad_images", "empty_class"):
        for cls in ("a", "b"):
            (base / name / cls).mkdir(parents=True)
            for i in range(10):
                Image.fromarray(np.full((20, 20), 25 * i, np.uint8)).save(base / name / cls / f"{i}.jpg")
    victim = base / "bad_images" / "b" / "3.jpg"
    victim.write_bytes(victim.read_bytes()[:40])
    (base / "empty_class" / "empty").mkdir()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
    from test_cifar import write_cifar10  # noqa: E402

    write_cifar10(base / "cifar")
    (base / "cifar" / "data_batch_3").unlink()
    from diffaug_fast.diffusion.checkpoints import unet_from_flags

    torch.manual_seed(0)
    torch.save(unet_from_flags(RELEASED_FLAGS).state_dict(), base / "released.pt")
    (base / "no_unet").mkdir()
    return {"bad_images": str(base / "bad_images"), "empty_class": str(base / "empty_class"),
            "cifar_missing": str(base / "cifar"), "released": str(base / "released.pt"), "no_unet": str(base / "no_unet")}


def _shape_data(base):
    """Data whose own shape is not the Fashion-MNIST denoiser's: complete CIFAR-10 batches, a folder of RGB images;
    and a folder holding only train/."""
    import numpy as np
    from PIL import Image
    from test_cifar import write_cifar10  # noqa: E402 (python_tests/data is on sys.path: _bad_data put it there)

    write_cifar10(base / "cifar_ok")
    for name, folder in (("rgb_images", base / "rgb_images"), ("train_only", base / "train_only" / "train")):
        for cls in ("a", "b"):
            (folder / cls).mkdir(parents=True)
            for i in range(10):
                Image.fromarray(np.full((20, 20, 3), 25 * i, np.uint8)).save(folder / cls / f"{i}.png")
    return {"cifar": str(base / "cifar_ok"), "rgb_images": str(base / "rgb_images"),
            "train_only": str(base / "train_only")}


def _output_data(base):
    """Output folders that must be refused: image data (class sub-folders of PNGs), a run stopped before its first
    checkpoint (its config.json and classes.json, no checkpoint); and a folder for a run that diverges."""
    import numpy as np
    from PIL import Image

    from diffaug_fast.config import to_dict, train_config
    from diffaug_fast.runs import files

    for cls in ("a", "b"):
        (base / "photos" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((20, 20), 80 * i, np.uint8)).save(base / "photos" / cls / f"{i}.png")
    config = train_config("quick", diffaug="off", train_limit=64, batch_size=32, de_timesteps=[], compile="off")
    files.write_json(base / "started" / files.CONFIG, to_dict(config))
    files.write_json(base / "started" / files.CLASSES, [str(i) for i in range(10)])
    return {"photos": str(base / "photos"), "started": str(base / "started"), "diverged": str(base / "diverged")}


STUDY = """
[study]
name = "{name}"
title = "t"
question = "q"
seeds = [0]
options = ["--max-steps", "3"]
budget = "b"
[variants.default]
[variants.baseline]
options = ["--diffaug", "off"]
[metrics.acc]
key = "clean_acc_full_test"
[[comparisons]]
claim = "c"
a = "{a}"
b = "baseline"
metric = "acc"
direction = "{direction}"
"""


def _study_data(base, existing):
    """Study files: a good one, one that is not TOML, one comparing an undeclared variant, a "keeps" without its
    margin, one whose name is not its file's; and a runs folder holding a run made with other options."""
    import shutil

    folder = base / "studies"
    folder.mkdir()
    for stem, name, a, direction in (("ok", "ok", "default", "greater"), ("undeclared", "undeclared", "w05", "greater"),
                                     ("keeps", "keeps", "default", "keeps"), ("renamed", "main", "default", "greater")):
        (folder / f"{stem}.toml").write_text(STUDY.format(name=name, a=a, direction=direction))
    (folder / "broken.toml").write_text("[study\nname = 1\n")
    shutil.copytree(existing, base / "study_runs" / "ok" / "default" / "seed0")  # a quick-preset run, no --max-steps
    return {f"study_{stem}": str(folder / f"{stem}.toml") for stem in ("ok", "undeclared", "keeps", "renamed", "broken")} | {
        "study_runs": str(base / "study_runs")}


def _finished_run(tmp_path_factory):
    from diffaug_fast.config import train_config
    from diffaug_fast.train.classifier import train_classifier

    run = tmp_path_factory.mktemp("run")
    train_classifier(train_config("quick", diffaug="off", train_limit=64, batch_size=32, de_timesteps=[],
                                        compile="off"), run, progress=False, evaluate_at_end=False)
    return run


@pytest.mark.slow  # a CLI subprocess per row; its fixture trains a classifier and a denoiser
@pytest.mark.parametrize("case, args, match", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_case(case, args, match, existing_run):
    # each row its own fresh folder: a row that leaves files there cannot change another row's message
    paths = {**existing_run, "fresh": str(Path(existing_run["fresh"]) / re.sub(r"\W+", "-", case).strip("-"))}
    args = [a.format(**paths) for a in args]
    match = match.format(**paths)
    out = subprocess.run(CLI + args, capture_output=True, text=True, timeout=600)
    assert out.returncode == 2, (case, out.stdout, out.stderr)
    assert match in out.stderr, (case, out.stderr)
    # one line; a fault found while training (a bad file in a streamed folder) may follow the progress bar
    lines = [line for line in out.stderr.strip().splitlines() if line and not PROGRESS_BAR.search(line)]
    assert "Traceback" not in out.stderr and len(lines) == 1, out.stderr


def test_doc_lists_exactly_these_cases():
    assert DOC.read_text() == markdown(), f"regenerate {DOC}: python python_tests/test_error_table.py > docs/errors.md"


if __name__ == "__main__":
    sys.stdout.write(markdown())
