"""The DiffAug trainer on real Fashion-MNIST: it learns, resumes bit-exactly, splits over processes
exactly, and its command writes the run folder and report; Ctrl-C and SIGTERM save and resume."""
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from diffaug_fast.runs.checkpoint import load_verified
from diffaug_fast.train.main import train_worker
from diffaug_fast.config import train_config
from diffaug_fast.errors import DiffAugError
from diffaug_fast.train.classifier import train_classifier
from diffaug_fast.train.distributed import launch
from helpers import fmnist_trainer, stop_after_first_log

CLI = [sys.executable, "-m", "diffaug_fast.cli"]

pytestmark = pytest.mark.slow  # every test trains on real Fashion-MNIST or runs `diffaug-fast train` subprocesses


def _config(**kw):
    base = dict(train_limit=192, batch_size=32, checkpoint_every=2, log_every=1, warmup_steps=2, eval_limit=20,
                de_timesteps=[0, 300], compile="off")
    return train_config("quick", **{**base, **kw})


def _assert_same_state(a, b, exact=True):
    for key in a["model"]:
        if exact:
            assert torch.equal(a["model"][key], b["model"][key]), key
        else:
            # float rounding only (the denoiser sees other batch sizes per process): atol 1e-4
            torch.testing.assert_close(a["model"][key], b["model"][key], atol=1e-4, rtol=1e-3)


def test_resume_continues_bit_exactly(tmp_path):
    config = _config(ema_decay=0.9)
    train_classifier(config, tmp_path / "a", progress=False, evaluate_at_end=False)
    train_classifier(config, tmp_path / "b", progress=False, stop_after=3, evaluate_at_end=False)
    assert load_verified(tmp_path / "b" / "checkpoint.pt")["step"] == 3
    train_classifier(config, tmp_path / "b", progress=False, evaluate_at_end=False)
    a, b = load_verified(tmp_path / "a" / "checkpoint.pt"), load_verified(tmp_path / "b" / "checkpoint.pt")
    assert a["step"] == b["step"] == 6
    _assert_same_state(a, b)
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])
    assert a["opt"]["state"].keys() == b["opt"]["state"].keys()
    for k in a["opt"]["state"]:
        assert torch.equal(a["opt"]["state"][k]["momentum_buffer"], b["opt"]["state"][k]["momentum_buffer"])
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # no duplicated or missing log lines across the resume


def test_resume_refuses_changed_settings(tmp_path):
    train_classifier(_config(), tmp_path, progress=False, stop_after=1, evaluate_at_end=False)
    try:
        train_classifier(_config(lr=0.5), tmp_path, progress=False, evaluate_at_end=False)
    except DiffAugError as err:
        assert "lr: 0.05 -> 0.5" in str(err)
    else:
        raise AssertionError("resuming with another learning rate must be refused")


def test_two_processes_equal_one(tmp_path):
    config = _config(norm="group", train_limit=128)  # GroupNorm: no per-rank batch statistics
    train_classifier(config, tmp_path / "one", progress=False, evaluate_at_end=False)
    launch(train_worker, 2, config, tmp_path / "two", False)
    one, two = load_verified(tmp_path / "one" / "checkpoint.pt"), load_verified(tmp_path / "two" / "checkpoint.pt")
    assert one["step"] == two["step"] == 4
    _assert_same_state(one, two, exact=False)


def test_baseline_learns(tmp_path):
    config = _config(diffaug="off", train_limit=2048, batch_size=64, eval_limit=500, de_timesteps=[],
                     checkpoint_every=100, epochs=2, lr=0.1)
    metrics = train_classifier(config, tmp_path, progress=False)
    assert metrics["clean_acc"] > 0.6, metrics  # 64 steps of SGD on real Fashion-MNIST (chance: 0.1)
    assert "de_acc" not in metrics


def test_train_command_writes_run_folder_and_report(tmp_path):
    common = ["--preset", "quick", "--train-limit", "256", "--batch-size", "64", "--eval-limit", "30", "--de-timesteps", "0,100,400"]
    base = subprocess.run(CLI + ["train", "--diffaug", "off", "--compile", "off", "--out", str(tmp_path / "base")]
                          + common,
                          capture_output=True, text=True, timeout=600)
    assert base.returncode == 0, base.stderr
    run = subprocess.run(CLI + ["train", "--out", str(tmp_path / "da"), "--compare", str(tmp_path / "base")] + common,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "DiffAug-Ensemble" in run.stdout and "report:" in run.stdout
    folder = tmp_path / "da"
    for name in ("config.json", "metrics.jsonl", "metrics.json", "report.md", "curves.png", "acc_vs_t.png",
                 "checkpoint.pt"):
        assert (folder / name).exists(), name
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics["acc_per_t"]) == {"0", "100", "400"} and 0 <= metrics["de_acc"] <= 1
    report = (folder / "report.md").read_text()
    assert "base (DiffAug off)" in report and "da (DiffAug on)" in report and "![curves.png]" in report
    assert (folder / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_train_command_errors_are_one_line(tmp_path):
    for args, needle in ((["--t-max", "5000"], "t_max"), (["--epochs", "0"], "epochs"),
                         (["--denoiser", str(tmp_path / "nope.safetensors")], "nope.safetensors")):
        out = subprocess.run(CLI + ["train", "--train-limit", "256", "--out", str(tmp_path / "x")] + args,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 2 and needle in out.stderr, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


STOP_ARGS = ["train", "--preset", "quick", "--train-limit", "1280", "--batch-size", "32", "--eval-limit", "10",
             "--de-timesteps", "0", "--compile", "off"]


@pytest.mark.parametrize("signum, status, says, workers, resume_with", [
    # `--out DIR --resume` alone continues with the run's own settings (no --preset quick, no flags)
    (signal.SIGINT, 130, "interrupted: saved", "0", "out only"),
    # a scheduler's SIGTERM reaches every process of the job, data workers too: they leave it to the trainer
    (signal.SIGTERM, 143, "stopped by SIGTERM: saved", "2", "same flags"),
])
def test_stop_signal_saves_and_resume_finishes(tmp_path, signum, status, says, workers, resume_with):
    args = CLI + STOP_ARGS + ["--workers", workers, "--out", str(tmp_path)]
    code, err = stop_after_first_log(args, tmp_path, lambda proc: os.killpg(proc.pid, signum))
    assert code == status, err
    assert says in err and "--resume" in err and "Traceback" not in err
    stopped = load_verified(tmp_path / "checkpoint.pt")["step"]
    assert 10 <= stopped < 40
    again = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "--resume" in again.stderr
    config = (tmp_path / "config.json").read_text()
    resume = args if resume_with == "same flags" else CLI + ["train", "--out", str(tmp_path)]
    done = subprocess.run(resume + ["--resume"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert load_verified(tmp_path / "checkpoint.pt")["step"] == 40
    assert (tmp_path / "config.json").read_text() == config


def test_sigterm_to_the_launcher_alone_stops_every_rank(tmp_path):
    """`kill PID` of a --nproc run signals the launching process only: it passes SIGTERM on, every rank finishes
    the same step, rank 0 saves it, and the command says so with status 143."""
    args = CLI + STOP_ARGS + ["--nproc", "2", "--out", str(tmp_path)]
    code, err = stop_after_first_log(args, tmp_path, lambda proc: proc.send_signal(signal.SIGTERM))
    assert code == 143, err
    assert "stopped by SIGTERM: saved" in err and "Traceback" not in err
    assert 10 <= load_verified(tmp_path / "checkpoint.pt")["step"] < 40
    done = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert load_verified(tmp_path / "checkpoint.pt")["step"] == 40


def test_sigterm_to_torchrun_saves_and_the_run_resumes(tmp_path):
    """torchrun passes a SIGTERM on to its workers (what SLURM's time limit or scancel sends to the job step):
    they save the step they stop at, and the same torchrun command with --resume finishes. torchrun itself then
    exits 1 with its own SignalException traceback; the workers' line says what was kept."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "-m", "diffaug_fast.cli"]
    args = torchrun + STOP_ARGS + ["--norm", "group", "--device", "cpu", "--out", str(tmp_path)]
    code, err = stop_after_first_log(args, tmp_path, lambda proc: proc.send_signal(signal.SIGTERM))
    assert code != 0 and "stopped by SIGTERM: saved" in err, err[-3000:]
    assert 1 <= load_verified(tmp_path / "checkpoint.pt")["step"] < 40
    done = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert load_verified(tmp_path / "checkpoint.pt")["step"] == 40


def test_noisy_and_da_modes_train_and_report_per_t_bucket(tmp_path):
    for mode in ("noisy", "da"):
        out = subprocess.run(CLI + ["train", "--preset", "quick", "--mode", mode, "--train-limit", "128", "--batch-size", "32",
                                    "--eval-limit", "20", "--compile", "off", "--out", str(tmp_path / mode)]
                             + (["--compare", str(tmp_path / "noisy")] if mode == "da" else []),
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr
        assert f"{mode} classifier: accuracy" in out.stdout
        metrics = json.loads((tmp_path / mode / "metrics.json").read_text())
        assert [r["t_from"] for r in metrics["acc_per_t_bucket"]] == list(range(0, 1000, 100))
    report = (tmp_path / "da" / "report.md").read_text()
    assert "| t | da (da) | noisy (noisy) |" in report and (tmp_path / "da" / "acc_per_t_bucket.png").exists()
    # guided sampling with the DA classifier: scale 0 is exactly unguided, scale 10 changes the images
    import numpy as np

    def sample(*extra):
        out_dir = tmp_path / f"s{len(list(tmp_path.iterdir()))}"
        run = subprocess.run(CLI + ["sample", "--num", "2", "--steps", "ddim4", "--out", str(out_dir), *extra],
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr
        return np.load(out_dir / "samples.npz")["images"]

    plain = sample()
    guided = ["--classifier", str(tmp_path / "da"), "--class", "3"]
    assert np.array_equal(sample(*guided, "--scale", "0"), plain)
    assert not np.array_equal(sample(*guided, "--scale", "10"), plain)
    # gradient pictures of both classifiers
    grads = subprocess.run(CLI + ["gradients", "--classifier", str(tmp_path / "noisy"), "--classifier",
                                  str(tmp_path / "da"), "--images", "2", "--t", "100,600", "--out",
                                  str(tmp_path / "g")], capture_output=True, text=True, timeout=600)
    assert grads.returncode == 0, grads.stderr
    alignment = json.loads((tmp_path / "g" / "gradient_alignment.json").read_text())
    assert [c["name"] for c in alignment["classifiers"]] == ["noisy (noisy)", "da (da)"]  # the --classifier order
    assert [c["mode"] for c in alignment["classifiers"]] == ["noisy", "da"] and alignment["images"] == 2
    assert set(alignment["classifiers"][1]["cosine"]) == {"100", "600"}
    assert (tmp_path / "g" / "gradients.png").read_bytes()[:4] == b"\x89PNG"


def test_da_mode_feeds_the_classifier_x_t_and_the_denoised_image():
    from diffaug_fast.train.classifier import ClassifierTrainer
    from diffaug_fast.data import ArraySource, load_fashion_mnist
    from diffaug_fast.augment import diffuse_and_denoise

    config = _config(mode="da", train_limit=64, denoiser_precision="fp32")  # auto: bf16 on avx512_bf16 CPUs
    job = ClassifierTrainer(config, ArraySource(*load_fashion_mnist("train", limit=64), []))
    (x_t, t, x_hat), y = job.batches.supervised(0)
    assert x_t.shape == x_hat.shape == (32, 1, 28, 28) and t.shape == (32,) and t.max() > 499
    # x_hat is the denoiser's estimate from exactly this x_t
    torch.testing.assert_close(job.denoiser(x_t, t), x_hat, atol=2e-4, rtol=1e-3)
    again = diffuse_and_denoise(job.denoiser, x_t * 0, t, seed=0)  # sanity: other inputs give other outputs
    assert not torch.allclose(again, x_hat)
    # the noisy mode sees the very same x_t (same keys), made without running the denoiser
    noisy = ClassifierTrainer(_config(mode="noisy", train_limit=64), ArraySource(*load_fashion_mnist("train", limit=64), []))
    (x_t2, t2), _ = noisy.batches.supervised(0)
    assert torch.equal(t2, t)
    torch.testing.assert_close(x_t2, x_t)


@pytest.mark.parametrize("options", [{"diffaug": "off"}, {"diffaug": "only"}, {"diffaug_weight": 0.25},
                                     {"denoiser": "fmnist-v"}])
def test_a_seed_gives_the_same_initial_classifier_whatever_the_diffaug_options(options):
    """Runs compared by seed (baseline vs DiffAug) start from the same weights: loading a denoiser draws random
    numbers (its modules are built, then its checkpoint replaces them), so the classifier is seeded after it."""
    reference = dict(fmnist_trainer(seed=7).model.state_dict())
    other = fmnist_trainer(seed=7, **options).model.state_dict()
    assert all(torch.equal(reference[k], other[k]) for k in reference)
    another_seed = fmnist_trainer(seed=8, **options).model.state_dict()
    assert not all(torch.equal(reference[k], another_seed[k]) for k in reference)  # the seed still decides
