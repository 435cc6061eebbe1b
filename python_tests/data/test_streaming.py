"""Training data streamed from disk: a JPEG tree of a few thousand small images is decoded per step by DataLoader
workers; what a step sees does not depend on the number of workers, on resuming mid-epoch or on the number of
processes; peak memory does not grow with the number of images; bad files are one line."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from diffaug_fast import streams
from diffaug_fast.config import train_config
from diffaug_fast.data import ArraySource, DecodedImages, ImageReadError, folder_source, open_source
from diffaug_fast.data.views import center, fit, resized_crop, resized_crop_box
from diffaug_fast.runs.checkpoint import load_verified
from diffaug_fast.train.classifier import train_classifier
from diffaug_fast.train.step_data import StepImages, StepSpec, check_item, step_items

CLI = [sys.executable, "-m", "diffaug_fast.cli"]
CLASSES = ("circle", "square", "stripes")


def write_tree(root, per_class: int, size=(30, 26), seed: int = 0, fmt: str = "JPEG"):
    """Small RGB pictures of three classes (each its own pattern and tint), as a user would hold them."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[:h, :w]
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = rng.integers(0, 60, (h, w, 3))
            if label == 0:
                mask = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(w, h) / 3) ** 2
            elif label == 1:
                mask = (abs(yy - h / 2) < h / 4) & (abs(xx - w / 2) < w / 4)
            else:
                mask = (xx // 3) % 2 == 0
            base[mask] += 150 + 20 * label
            Image.fromarray(base.clip(0, 255).astype(np.uint8)).save(root / name / f"{i:05d}.jpg", fmt, quality=90)
    return root


@pytest.fixture(scope="module")
def jpeg_tree(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("jpegs"), per_class=800)  # 2400 images


def _spec(n, **kw):
    base = dict(seed=3, batch=16, rank=0, world=1, images=n, image_size=28, channels=1)
    return StepSpec(**{**base, **kw})


def test_a_folder_is_listed_not_decoded(jpeg_tree):
    source = folder_source(jpeg_tree, "train")
    assert len(source) == 3 * 720 and source.classes == list(CLASSES)
    assert isinstance(source.files[0], str)  # paths only: memory does not hold pixels
    im = source.image(0)
    assert im.size == (30, 26)


@pytest.mark.parametrize("crop,view", [("pad", "same"), ("resized", "center")])
def test_steps_do_not_depend_on_the_number_of_workers(jpeg_tree, crop, view):
    source = folder_source(jpeg_tree, "train", limit=160)  # 10 steps per epoch: steps 8..12 cross an epoch
    data = StepImages(source, _spec(len(source), crop=crop, diffaug_view=view, augmix=True, channels=3,
                                    image_size=24))
    alone = [check_item(item, s) for s, item in zip(range(8, 13), step_items(data, 8, 13, workers=0))]
    helped = [check_item(item, s) for s, item in zip(range(8, 13), step_items(data, 8, 13, workers=2))]
    for a, b in zip(alone, helped):
        assert a.keys() == b.keys() and a["x"].dtype == torch.uint8 and a["x"].shape == (16, 3, 24, 24)
        assert all(torch.equal(a[k], b[k]) for k in a if k != "step")
    assert ("x_view" in alone[0]) == (view == "center")
    assert not torch.equal(alone[0]["x"], alone[1]["x"])


def test_shards_of_two_ranks_make_the_global_batch(jpeg_tree):
    source = folder_source(jpeg_tree, "train", limit=64)
    kw = dict(crop="resized", image_size=20, channels=3)
    whole = StepImages(source, _spec(64, **kw))[2]
    halves = [StepImages(source, _spec(64, rank=r, world=2, **kw))[2] for r in (0, 1)]
    assert torch.equal(torch.cat([h["x"] for h in halves]), whole["x"])
    assert torch.equal(torch.cat([h["y"] for h in halves]), whole["y"])


def test_resized_crop_is_keyed_and_in_bounds():
    for i in range(200):
        left, top, w, h = resized_crop_box(40, 30, streams.generator(0, "train_view", i))
        assert 0 <= left and 0 <= top and 0 < w and 0 < h and left + w <= 40 and top + h <= 30
        assert 0.07 * 1200 <= w * h <= 1200 or (w, h) in ((40, 30),)
    im = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8))
    a = resized_crop(im, 16, 3, streams.generator(1, "train_view", 5))
    b = resized_crop(im, 16, 3, streams.generator(1, "train_view", 5))
    assert a.shape == (3, 16, 16) and torch.equal(a, b)


@pytest.mark.parametrize("shape", [(50, 70), (70, 50), (33, 33), (200, 31)])
def test_center_view_is_resize_then_centre_crop_as_torchvision(shape):
    from torchvision.transforms import v2

    im = Image.fromarray(np.random.default_rng(1).integers(0, 255, (*shape, 3), dtype=np.uint8))
    ours = center(im, 28, 3)
    theirs = v2.Compose([v2.Resize(32), v2.CenterCrop(28)])(im)  # 32 = round(28 * 256 / 224)
    assert torch.equal(ours, torch.from_numpy(np.array(theirs)).permute(2, 0, 1))


def test_in_memory_images_of_the_right_size_pass_through():
    x = torch.randint(0, 255, (3, 1, 28, 28), dtype=torch.uint8)
    first = x[0]
    assert fit(first, 28, 1) is first
    source = ArraySource(x, torch.tensor([0, 1, 0]), ["a", "b"])
    assert torch.equal(source.batch(torch.tensor([2, 0])), x[[2, 0]])


def test_decoded_test_images_are_read_a_slice_at_a_time(jpeg_tree):
    source = folder_source(jpeg_tree, "test", limit=30)
    images = DecodedImages(source, "fit", 28, 1, threads=2)
    assert images.shape == (30, 1, 28, 28) and len(images) == 30
    part = images[5:9]
    assert part.shape == (4, 1, 28, 28) and part.dtype == torch.float32 and -1 <= part.min() and part.max() <= 1
    assert torch.equal(images[6], part[1])


def test_an_unreadable_file_in_a_worker_is_one_line(tmp_path):
    root = write_tree(tmp_path / "data", per_class=20)
    victim = root / "square" / "00003.jpg"
    victim.write_bytes(victim.read_bytes()[:60])  # truncated JPEG
    source = folder_source(root, "train")
    data = StepImages(source, _spec(len(source), batch=len(source)))
    with pytest.raises(ImageReadError, match="cannot read image .*00003.jpg"):
        for step, item in enumerate(step_items(data, 0, 1, workers=2)):
            check_item(item, step)


def test_mixed_sizes_and_modes_are_fitted(tmp_path):
    root = tmp_path / "mixed"
    for k, (name, size, mode) in enumerate([("a", (40, 30), "RGB"), ("a", (12, 50), "L"), ("b", (64, 64), "P"),
                                            ("b", (33, 17), "RGBA")]):
        (root / name).mkdir(parents=True, exist_ok=True)
        Image.new(mode, size, color=100).save(root / name / f"{k}.png")
    source = folder_source(root, "train")
    views = [fit(source.image(i), 24, 3) for i in range(len(source))]
    assert all(v.shape == (3, 24, 24) for v in views)


@pytest.mark.slow  # two short training runs on the JPEG tree with two loader workers
def test_resume_mid_epoch_with_workers_is_exact(jpeg_tree, tmp_path):
    kw = dict(data=str(jpeg_tree), image_size=28, channels=1, train_limit=256, batch_size=32, workers=2,
              warmup_steps=2, checkpoint_every=100, de_timesteps=[], compile="off", crop="resized",
              diffaug_view="center")
    config = train_config("quick", **kw)
    train_classifier(config, tmp_path / "straight", progress=False, evaluate_at_end=False)
    train_classifier(config, tmp_path / "resumed", progress=False, stop_after=3, evaluate_at_end=False)
    train_classifier(config, tmp_path / "resumed", progress=False, evaluate_at_end=False)  # 3 of 8 steps: mid-epoch
    a, b = (load_verified(tmp_path / run / "checkpoint.pt") for run in ("straight", "resumed"))
    assert a["step"] == b["step"] == 8
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    # another worker count is the same run too (the option is not part of the run's identity)
    train_classifier(train_config("quick", **{**kw, "workers": 0}), tmp_path / "inline", progress=False,
                     evaluate_at_end=False)
    c = load_verified(tmp_path / "inline" / "checkpoint.pt")
    assert all(torch.equal(a["model"][k], c["model"][k]) for k in a["model"])


@pytest.mark.slow  # spawns 2 gloo processes
def test_two_processes_over_the_streaming_loader_equal_one(jpeg_tree, tmp_path):
    from diffaug_fast.train.distributed import launch
    from diffaug_fast.train.main import train_worker

    config = train_config("quick", data=str(jpeg_tree), image_size=28, channels=1, train_limit=128, batch_size=32,
                          workers=1, norm="group", warmup_steps=2, de_timesteps=[], compile="off")
    train_classifier(config, tmp_path / "one", progress=False, evaluate_at_end=False)
    launch(train_worker, 2, config, tmp_path / "two", False)
    one, two = (load_verified(tmp_path / run / "checkpoint.pt") for run in ("one", "two"))
    assert one["step"] == two["step"] == 4
    for k in one["model"]:  # float rounding only: the denoiser sees half batches per process
        torch.testing.assert_close(one["model"][k], two["model"][k], atol=1e-4, rtol=1e-3)


PEAK = textwrap.dedent("""
    import json, resource, sys
    from diffaug_fast.config import train_config
    from diffaug_fast.train.classifier import train_classifier
    data, out, mode = sys.argv[1:4]
    config = train_config("quick", data=data, image_size=128, channels=3, batch_size=32, workers=0,
                          diffaug="off", de_timesteps=[], compile="off", checkpoint_every=1000)
    kwargs = {}
    if mode == "in_memory":  # what training did before streaming: every image decoded into one float32 tensor
        from diffaug_fast.data import load_image_folder
        kwargs["data"] = load_image_folder(data, "train", image_size=128, channels=3)
    train_classifier(config, out, progress=False, stop_after=3, evaluate_at_end=False, **kwargs)
    # VmHWM, not getrusage's ru_maxrss: that one keeps the parent's peak across fork + exec (a big pytest process)
    hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
    print(json.dumps({"peak_rss_mb": hwm / 1024}))
""")


@pytest.mark.slow  # writes 3750 JPEGs, three training subprocesses
def test_peak_memory_does_not_grow_with_the_number_of_images(tmp_path):
    def peak(n, mode):
        root = tmp_path / f"x{n}"
        if not root.exists():
            write_tree(root, per_class=n, size=(128, 128), seed=n)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}  # fewer sources of RSS noise
        run = subprocess.run([sys.executable, "-c", PEAK, str(root), str(tmp_path / f"run{n}{mode}"), mode],
                             capture_output=True, text=True, timeout=900, env=env)
        assert run.returncode == 0, run.stderr[-2000:]
        return json.loads(run.stdout.strip().splitlines()[-1])["peak_rss_mb"]

    small, large = peak(250, "streamed"), peak(1000, "streamed")  # 675 and 2700 training images, 128x128 RGB
    assert large < 1.10 * small, (small, large)
    # the measurement can see the difference: holding the 2700 images as float32 (530 MB) is far above 10 %
    in_memory = peak(1000, "in_memory")
    assert in_memory > 1.10 * small, (small, large, in_memory)


def test_fashion_mnist_stays_in_memory_and_needs_no_workers():
    from diffaug_fast.train.step_data import loader_workers

    source = open_source("fmnist", "train", limit=100)
    assert isinstance(source, ArraySource) and source.images.dtype == torch.uint8
    assert loader_workers(train_config("quick"), source) == 0


def test_workers_option_is_checked():
    run = subprocess.run(CLI + ["train", "--workers", "-1"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "--workers" in run.stderr and len(run.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # a `train` subprocess interrupted by Ctrl-C to its whole process group, then resumed
def test_ctrl_c_with_loader_workers_saves_and_resumes(jpeg_tree, tmp_path):
    import signal

    from helpers import stop_after_first_log

    out = tmp_path / "run"
    args = CLI + ["train", "--preset", "quick", "--data", str(jpeg_tree), "--image-size", "28", "--channels", "1", "--workers", "2",
                  "--train-limit", "1280", "--batch-size", "32", "--diffaug", "off", "--de-timesteps", "",
                  "--eval-limit", "10", "--compile", "off", "--out", str(out)]
    # as a terminal's Ctrl-C: the trainer and its loader workers
    code, err = stop_after_first_log(args, out, lambda proc: os.killpg(proc.pid, signal.SIGINT))
    assert code == 130, err
    stopped = load_verified(out / "checkpoint.pt")["step"]
    assert 10 <= stopped < 40, stopped
    done = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert load_verified(out / "checkpoint.pt")["step"] == 40
