"""Issue 15, "own data, end to end": a 3-class 32 px RGB image folder, a denoiser trained on it, classifiers trained
with that denoiser (typed as a relative path), and every command run on them from another directory: sample
(the run's own denoiser by default, any spelling of the same file accepted), eval, fidelity, gradients,
denoiser-report; the run folder moved or its denoiser changed / gone; resuming with another spelling; the
denoiser trainer's report, step-scaled EMA / warm-up and its too-short warning."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffaug_fast.cli import main
from diffaug_fast.config import DenoiserConfig, train_config
from diffaug_fast.errors import DiffAugError
from diffaug_fast.runs import files
from diffaug_fast.runs.classifiers import load_classifier, run_config
from diffaug_fast.train.classifier import train_classifier
from diffaug_fast.train.denoiser import (export_ema, too_short, train_denoiser, with_step_defaults,
                                         write_denoiser_report)

CLASSES = ("blue_cross", "green_bar", "red_disc")
TINY32 = dict(image_size=32, in_channels=3, num_channels=32, num_res_blocks=1, attention_resolutions="",
              channel_mult=(1,), use_scale_shift_norm=True)
RGB = dict(image_size=32, channels=3)


def make_folder(root: Path, per_class: int = 20) -> Path:
    """Three classes of 32x32 RGB pictures (a coloured cross, bar or disc on noise), as a user would have them."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = (30 + rng.integers(0, 20, (32, 32, 3))).astype(np.uint8)
            mask = [(abs(xx - 16) < 3) | (abs(yy - 16) < 3), abs(xx - 16 - rng.integers(-4, 5)) < 4,
                    (yy - 16 - rng.integers(-3, 4)) ** 2 + (xx - 16) ** 2 < 80][c]
            img[mask] = [(40, 40, 220), (40, 200, 40), (220, 40, 40)][c]
            Image.fromarray(img).save(root / name / f"{i:02d}.png")
    return root


def quick_run(out, mode="clean", **extra):
    config = train_config("quick", data="my_images", denoiser="den/ema.safetensors", mode=mode, batch_size=16,
                          eval_limit=6, de_timesteps=[] if mode != "clean" else [0, 500], compile="off",
                          warmup_steps=1, **RGB, **extra)
    train_classifier(config, out, progress=False)
    return Path(out)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """proj/my_images, proj/den (a tiny denoiser of them), proj/runs/guide (noisy), proj/runs/clean, all made with
    the working directory proj/ and the denoiser typed as the relative path den/ema.safetensors."""
    proj = tmp_path_factory.mktemp("proj")
    make_folder(proj / "my_images")
    mp = pytest.MonkeyPatch()
    mp.chdir(proj)
    try:
        config = DenoiserConfig(data="my_images", steps=2, batch_size=8, checkpoint_every=2, unet=dict(TINY32), **RGB)
        export_ema(train_denoiser(config, "den", progress=False), config, "den/ema.safetensors")
        report = write_denoiser_report(config, "den", limit=6, samples=4)
        quick_run("runs/guide", mode="noisy")
        quick_run("runs/clean")
    finally:
        mp.undo()
    return proj, report


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_train_denoiser_writes_the_report(project):
    proj, report = project
    rows = files.read_json(proj / "den" / files.DENOISER_REPORT)
    assert len(rows) == 10 and all(r["mean_image_mse"] == report["mean_image_mse"] > 0 for r in rows)
    assert (proj / "den" / "samples_ddim50.png").exists() and "mean image" in (proj / "den" / files.REPORT).read_text()
    assert files.read_json(proj / "den" / "ema.json")["data"]["relative"] == "../my_images"


def test_run_records_its_denoiser_and_data_portably(project, elsewhere):
    proj, _ = project
    record = files.read_json(proj / "runs" / "guide" / files.DENOISER_RECORD)
    assert record["source"] == "den/ema.safetensors" and record["relative"] == "../../den/ema.safetensors"
    assert record["absolute"] == str(proj / "den" / "ema.safetensors") and len(record["sha256"]) == 64
    config = run_config(proj / "runs" / "guide")  # from another directory: resolved, not "den/ema.safetensors"
    assert config.diffaug.denoiser == str(proj / "den" / "ema.safetensors")
    assert config.data.source == str(proj / "my_images")
    model, _ = load_classifier(proj / "runs" / "guide")
    assert model(torch.zeros(2, 3, 32, 32), torch.tensor([0, 500])).shape == (2, 3)


def test_sample_uses_the_runs_denoiser_from_another_directory(project, elsewhere):
    proj, _ = project
    guide = str(proj / "runs" / "guide")
    assert main(["sample", "--classifier", guide, "--class", "red_disc", "--num", "3", "--steps", "ddim3",
                 "--out", "s"]) == 0
    npz = np.load(elsewhere / "s" / "samples.npz")
    assert npz["images"].shape == (3, 3, 32, 32) and npz["labels"].tolist() == [2, 2, 2]
    assert str(npz["data"]) == str(proj / "my_images")
    # the absolute spelling of the same file is the same denoiser; another model is refused
    assert main(["sample", "--classifier", guide, "--class", "0", "--num", "2", "--steps", "ddim2", "--model",
                 str(proj / "den" / "ema.safetensors"), "--out", "s2"]) == 0
    assert main(["sample", "--classifier", guide, "--class", "0", "--num", "2", "--steps", "ddim2", "--model",
                 "fmnist", "--out", "s3"]) == 2


def test_fidelity_and_gradients_on_rgb_runs(project, elsewhere, capsys):
    proj, _ = project
    assert main(["sample", "--classifier", str(proj / "runs" / "guide"), "--class", "all", "--num", "6", "--steps",
                 "ddim2", "--out", "s"]) == 0
    # in batches of 4 the guided draw is the same: each batch is guided toward its own images' classes
    assert main(["sample", "--classifier", str(proj / "runs" / "guide"), "--class", "all", "--num", "6", "--steps",
                 "ddim2", "--batch-size", "4", "--out", "s4"]) == 0
    whole, batched = np.load(elsewhere / "s" / "samples.npz"), np.load(elsewhere / "s4" / "samples.npz")
    assert whole["labels"].tolist() == batched["labels"].tolist() == [0, 1, 2, 0, 1, 2]
    assert np.abs(whole["images"].astype(int) - batched["images"]).max() <= 1
    # the reference defaults to the folder's test split (recorded in samples.npz); the extractor: a clean classifier
    # of these images (the shipped Fashion-MNIST one or Inception without its weights file is refused in one line)
    assert main(["fidelity", "--samples", "s/samples.npz", "--extractor", str(proj / "runs" / "clean"),
                 "--json", "f.json"]) == 0
    out = capsys.readouterr().out
    assert f"test images of {proj / 'my_images'}" in out and "judge accuracy" in out and "95% bootstrap" in out
    numbers = files.read_json(elsewhere / "f.json")
    assert np.isfinite(numbers["frechet_inception_distance"]) and numbers["bootstrap_resamples"] == 1000
    assert numbers["frechet_inception_distance_low"] < numbers["frechet_inception_distance_high"]
    assert main(["fidelity", "--samples", "s/samples.npz", "--extractor", "fmnist-classifier"]) == 2
    assert "is a clean classifier of 1x28x28 images; the samples are 3x32x32" in capsys.readouterr().err
    assert main(["gradients", "--classifier", str(proj / "runs" / "guide"), "--images", "2", "--t", "100,500",
                 "--out", "g"]) == 0
    assert (elsewhere / "g" / "gradients.png").exists()


def test_denoiser_report_takes_the_users_denoiser(project, elsewhere, capsys):
    proj, _ = project
    assert main(["denoiser-report", "--model", str(proj / "den" / "ema.safetensors"), "--limit", "6", "--samples",
                 "4", "--out", "r"]) == 0  # --data defaults to the folder recorded in ema.json
    assert len(files.read_json(elsewhere / "r" / files.DENOISER_REPORT)) == 10
    assert "mean-image MSE" in capsys.readouterr().out
    assert main(["denoiser-report", "--model", str(proj / "den" / "ema.safetensors"), "--data", "fmnist",
                 "--limit", "6", "--out", "r2"]) == 2  # Fashion-MNIST is not what it was trained on: one line


def test_moved_project_and_changed_or_missing_denoiser(project, tmp_path, monkeypatch):
    proj, _ = project
    moved = tmp_path / "moved"
    for part in ("den", "my_images", "runs/guide"):
        shutil.copytree(proj / part, moved / part)
    monkeypatch.chdir(tmp_path)
    assert run_config(moved / "runs" / "guide").diffaug.denoiser == str(moved / "den" / "ema.safetensors")
    (moved / "den" / "ema.safetensors").write_bytes(b"changed")
    with pytest.raises(DiffAugError, match=r"gone: looked at .*moved/den/ema.safetensors \(changed.*"
                                           r"and .*/den/ema.safetensors"):
        shutil.move(proj / "den" / "ema.safetensors", tmp_path / "aside.safetensors")
        try:
            run_config(moved / "runs" / "guide")
        finally:
            shutil.move(tmp_path / "aside.safetensors", proj / "den" / "ema.safetensors")
    (moved / "den" / "ema.safetensors").unlink()
    assert run_config(moved / "runs" / "guide").diffaug.denoiser == str(proj / "den" / "ema.safetensors")  # absolute


def test_resume_and_evaluate_only_accept_another_spelling(project, tmp_path, monkeypatch):
    from diffaug_fast.train.evaluation import evaluate_only

    proj, _ = project
    monkeypatch.chdir(proj)
    config = train_config("quick", data="my_images", denoiser="den/ema.safetensors", batch_size=16, eval_limit=6,
                          de_timesteps=[0], compile="off", warmup_steps=1, **RGB)
    train_classifier(config, tmp_path / "run", progress=False, stop_after=1)
    monkeypatch.chdir(tmp_path)
    absolute = train_config("quick", data=str(proj / "my_images"), denoiser=str(proj / "den" / "ema.safetensors"),
                            batch_size=16, eval_limit=6, de_timesteps=[0], compile="off", warmup_steps=1, **RGB)
    metrics = train_classifier(absolute, tmp_path / "run", progress=False)
    assert metrics["step"] == 3
    assert evaluate_only(tmp_path / "run", {"limit": 3, "de_timesteps": [0]}, progress=False)["step"] == 3
    other = train_config("quick", data=str(proj / "my_images"), denoiser="fmnist", batch_size=16, **RGB)
    from diffaug_fast.train.checks import check_same_run
    from diffaug_fast.runs.checkpoint import load_verified

    with pytest.raises(DiffAugError, match="denoiser:"):
        check_same_run(load_verified(tmp_path / "run" / files.CHECKPOINT)["config"], other, "the checkpoint",
                       tmp_path / "run")


def test_eval_from_another_directory(project, elsewhere):
    proj, _ = project
    assert main(["eval", str(proj / "runs" / "clean"), "--suite", "ood", "--ood", "uniform", "--limit", "6",
                 "--de-timesteps", "0,500", "--out", "e"]) == 0
    assert files.read_json(elsewhere / "e" / files.EVAL)["images"] == 6


def test_denoiser_step_defaults_and_too_short_warning():
    short = with_step_defaults(DenoiserConfig(steps=400))
    assert short.ema_decay == pytest.approx(0.975) and short.warmup == 40
    long = with_step_defaults(DenoiserConfig(steps=100_000))
    assert long.ema_decay == 0.999 and long.warmup == 200
    given = with_step_defaults(DenoiserConfig(steps=400, ema_decay=0.9, warmup=5))
    assert (given.ema_decay, given.warmup) == (0.9, 5)
    assert "far too short" in too_short(400, 128, 162)  # the run: 400 steps on 162 images
    assert "far too short" in too_short(5000, 4, 1000)  # 20 passes over a small set
    assert too_short(2500, 128, 60_000) is None  # the shipped Fashion-MNIST recipe
    assert too_short(3000, 64, 162) is None


@pytest.mark.slow
def test_cli_train_denoiser_writes_report_and_warns(tmp_path, monkeypatch, capsys):
    """The command itself (the lean 32 px UNet: seconds per step on 2 CPU cores)."""
    make_folder(tmp_path / "imgs", per_class=10)  # every 10th image is a test image
    monkeypatch.chdir(tmp_path)
    assert main(["train-denoiser", "--data", "imgs", "--image-size", "32", "--channels", "3", "--steps", "2",
                 "--batch-size", "4", "--report-limit", "3", "--report-samples", "1", "--out", "d"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("far too short") == 1 and "mean-image MSE" in captured.out
    saved = files.read_json(tmp_path / "d" / files.CONFIG)
    assert (saved["ema_decay"], saved["warmup"]) == (0.0, 1)
    assert (tmp_path / "d" / files.REPORT).exists() and (tmp_path / "d" / "samples_ddim50.png").exists()
