"""The user's own images: an image folder trains a guidance classifier that then guides sampling (the two
commands), exported / shipped classifiers load anywhere a run folder does, and bad folders are named."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from diffaug_fast.data import FASHION_MNIST_CLASSES, HOLDOUT_EVERY, load_fashion_mnist, load_image_folder
from diffaug_fast.config import train_config
from diffaug_fast.errors import DiffAugError
from diffaug_fast.eval.metrics import accuracy
from diffaug_fast.runs.classifiers import classifier_classes, export_classifier, load_classifier
from diffaug_fast.train.classifier import train_classifier

CLI = [sys.executable, "-m", "diffaug_fast.cli"]
NAMES = ("trouser", "sneaker", "bag")
LABELS = (1, 7, 8)


@pytest.fixture(scope="module")
def fmnist_folder(tmp_path_factory):
    """Real Fashion-MNIST test images of three classes written as PNG files, as a user would have them."""
    root = tmp_path_factory.mktemp("my_images")
    x, y = load_fashion_mnist("test", limit=2000)
    pixels = ((x[:, 0] + 1) * 127.5).round().to(torch.uint8).numpy()
    for name, label in zip(NAMES, LABELS):
        (root / name).mkdir()
        for i, k in enumerate(torch.nonzero(y == label).flatten()[:60].tolist()):
            Image.fromarray(pixels[k]).save(root / name / f"{i:03d}.png")
    return root, x, y


def test_folder_reads_real_pixels_and_holds_out_every_tenth(fmnist_folder):
    root, x, y = fmnist_folder
    train_x, train_y = load_image_folder(root, "train")  # classes sorted by name: bag, sneaker, trouser
    test_x, test_y = load_image_folder(root, "test")
    assert train_x.shape == (3 * 54, 1, 28, 28) and test_x.shape == (3 * 6, 1, 28, 28)
    assert torch.equal(train_y.bincount(), torch.tensor([54, 54, 54]))
    # PNG is lossless: the sneaker folder's 10th file is exactly the 10th sneaker of the test split
    sneakers = x[y == 7]
    assert torch.equal(test_x[test_y == 1][0], sneakers[HOLDOUT_EVERY - 1])
    assert torch.equal(train_x[train_y == 1][0], sneakers[0])
    limited_x, limited_y = load_image_folder(root, "train", limit=7)
    assert limited_y.tolist() == [0, 1, 2, 0, 1, 2, 0]
    rgb, _ = load_image_folder(root, "test", image_size=16, channels=3)
    assert rgb.shape == (18, 3, 16, 16) and torch.equal(rgb[:, 0], rgb[:, 2])  # gray read as RGB: equal planes


def test_folder_with_train_and_test_subfolders(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(tmp_path / split / c / f"{i}.jpg")
    x, y = load_image_folder(tmp_path, "train", image_size=12, channels=3)
    assert x.shape == (6, 3, 12, 12) and y.tolist() == [0, 0, 0, 1, 1, 1]
    assert load_image_folder(tmp_path, "test")[0].shape == (4, 1, 28, 28)


def test_bad_folders_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="argument 'data'.*not a folder"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "only").mkdir()
    with pytest.raises(ValueError, match="at least two class sub-folders"):
        load_image_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="class folder 'empty'.*holds no images"):
        load_image_folder(tmp_path)
    (tmp_path / "empty" / "broken.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "only" / "ok.png")
    with pytest.raises(ValueError, match="cannot read image .*broken.png"):
        load_image_folder(tmp_path)
    with pytest.raises(ValueError, match="argument 'channels'"):
        load_image_folder(tmp_path, channels=2)


def test_denoiser_of_other_images_is_refused(fmnist_folder):
    root, _, _ = fmnist_folder
    config = train_config("quick", data=str(root), image_size=30, mode="noisy", compile="off",
                                batch_size=16, eval_limit=10)  # the 28x28 UNet (2 downsamplings) takes 32, not 30
    with pytest.raises(DiffAugError, match="takes image sizes divisible by 4, the data are 30x30"):
        train_classifier(config, root.parent / "refused", progress=False)


@pytest.mark.slow  # `train` and `sample` subprocesses
def test_two_commands_train_a_guidance_classifier_on_a_folder_and_sample(fmnist_folder, tmp_path):
    root, _, _ = fmnist_folder
    run = tmp_path / "guide"
    train = subprocess.run(CLI + ["train", "--preset", "quick", "--mode", "noisy", "--data", str(root), "--batch-size", "32",
                                  "--eval-limit", "18", "--compile", "off", "--out", str(run)],
                           capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr
    assert json.loads((run / "classes.json").read_text()) == sorted(NAMES)  # folder order
    model, config = load_classifier(run)
    assert config.data.source == str(root) and model.net.fc.out_features == 3

    def sample(*extra):
        out = tmp_path / f"s{len(list(tmp_path.iterdir()))}"
        res = subprocess.run(CLI + ["sample", "--classifier", str(run), "--num", "4", "--steps", "ddim3",
                                    "--scale", "4", "--out", str(out), *extra], capture_output=True, text=True,
                             timeout=600)
        return res, out

    res, out = sample("--class", "sneaker")
    assert res.returncode == 0, res.stderr
    data = np.load(out / "samples.npz")
    assert data["images"].shape == (4, 1, 28, 28) and data["labels"].tolist() == [1, 1, 1, 1]
    res, out = sample("--class", "all")
    assert np.load(out / "samples.npz")["labels"].tolist() == [0, 1, 2, 0]
    res, _ = sample("--class", "coat")
    assert res.returncode == 2 and "--class 'coat'" in res.stderr and "bag, sneaker, trouser" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.slow  # the shipped classifier on 2000 real test images
def test_shipped_judge_classifier_is_accurate_on_real_test_images():
    model, config = load_classifier("fmnist-classifier")
    assert config.model.mode == "clean"
    x, y = load_fashion_mnist("test", limit=2000)
    acc = accuracy(model, x, y)
    assert acc > 0.88, acc  # 90.7 % on the full test set when exported
    assert classifier_classes("fmnist-classifier", 10) == list(FASHION_MNIST_CLASSES)


@pytest.mark.slow  # a training run
def test_exported_classifier_equals_its_run(tmp_path):
    run = tmp_path / "run"
    config = train_config("quick", diffaug="off", train_limit=256, batch_size=64, de_timesteps=[],
                                compile="off", warmup_steps=2)
    train_classifier(config, run, progress=False, evaluate_at_end=False)
    path = export_classifier(run, tmp_path / "exported" / "clf.safetensors")
    a, _ = load_classifier(run)
    b, _ = load_classifier(path)
    x, _ = load_fashion_mnist("test", limit=64)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    assert classifier_classes(path, 10) == list(FASHION_MNIST_CLASSES)
    with pytest.raises(ValueError, match="must end in .safetensors"):
        export_classifier(run, tmp_path / "clf.pt")


@pytest.mark.slow  # `train-denoiser` and `sample` subprocesses
def test_train_denoiser_on_an_rgb_folder_exports_a_denoiser_of_that_shape(tmp_path):
    """`train-denoiser --data DIR --image-size 16 --channels 3`: the exported model is a denoiser of 3×16×16 images
    that `sample --model` and `train --denoiser` accept."""
    from diffaug_fast.runs.weights import load_exported

    root = tmp_path / "rgb"
    gen = np.random.default_rng(0)
    for c in ("red", "blue"):
        (root / c).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(gen.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    out = subprocess.run(CLI + ["train-denoiser", "--data", str(root), "--image-size", "16", "--channels", "3",
                                "--steps", "2", "--batch-size", "8", "--out", str(tmp_path / "den")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    den = load_exported(tmp_path / "den" / "ema.safetensors")
    assert den.image_shape == (3, 16, 16)
    res = subprocess.run(CLI + ["sample", "--model", str(tmp_path / "den" / "ema.safetensors"), "--num", "2",
                                "--steps", "ddim3", "--out", str(tmp_path / "s")], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr
    assert np.load(tmp_path / "s" / "samples.npz")["images"].shape == (2, 3, 16, 16)
    bad = subprocess.run(CLI + ["train-denoiser", "--data", str(root), "--image-size", "18", "--out",
                                str(tmp_path / "bad")], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "multiple of 4" in bad.stderr


# ---------------------------------------------------------------------------------------------------------------
# Issue 37: an image folder sets its own channels (and, without a denoiser, its size) when the flags are left auto


def _two_classes(root, size=(48, 40), mode="RGB", per_class=4):
    """Two class folders of ``per_class`` images of ``size`` (width, height) in PIL ``mode``."""
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            color = (40 * i, 90, 200) if mode.startswith("RGB") else 40 * i
            Image.new(mode, size, color=color).save(root / c / f"{i}.png")
    return root


def test_rgb_folder_resolves_to_three_channels_and_the_fmnist_denoiser_is_refused(tmp_path):
    """Before: read as 1x28x28 grey images whatever the folder held, and trained with the Fashion-MNIST denoiser."""
    from diffaug_fast.data import folder_source, native_shape
    from diffaug_fast.runs.weights import pretrained
    from diffaug_fast.train.image_shape import resolve_image_shape

    root = _two_classes(tmp_path / "rgb")
    assert native_shape(str(root)) == (40, 3)  # the shorter side, a multiple of 4
    config = train_config("quick", data=str(root), batch_size=4, compile="off")
    source = folder_source(root)
    assert resolve_image_shape(config, source).describe() == "3x40x40 (from the data)"  # no denoiser
    assert resolve_image_shape(config, source, pretrained("fmnist")).describe() == \
        "3x28x28 (channels from the data, size from the denoiser 'fmnist')"
    with pytest.raises(DiffAugError) as err:
        train_classifier(config, tmp_path / "run", progress=False)
    assert str(err.value).startswith(f"argument --denoiser: 'fmnist' works on 1x28x28 images but --data {root} gives "
                                     "3x28x28 (the network takes 1-channel images, the data have 3 channels)")


def test_folder_shape_by_image_mode_and_size(tmp_path):
    from diffaug_fast.config import DenoiserConfig
    from diffaug_fast.data import FOLDER_SIDE_MAX, native_shape
    from diffaug_fast.train.denoiser import with_image_shape

    cases = {"L": ((30, 30), (28, 1)), "LA": ((20, 24), (20, 1)), "RGBA": ((200, 150), (FOLDER_SIDE_MAX, 3)),
             "P": ((32, 32), (32, 3))}
    for mode, (size, expected) in cases.items():
        root = _two_classes(tmp_path / mode, size=size, mode=mode, per_class=1)
        assert native_shape(str(root)) == expected, mode
        den = with_image_shape(DenoiserConfig(data=str(root)))  # train-denoiser: the same rule
        assert (den.image_size, den.channels) == expected, mode
    assert native_shape("fmnist") == (28, 1)


def test_grey_folder_trains_as_before(fmnist_folder):
    """Real Fashion-MNIST PNGs (28x28 grey): 1 channel, 28 px, as the defaults gave before."""
    from diffaug_fast.data import folder_source
    from diffaug_fast.runs.weights import pretrained
    from diffaug_fast.train.image_shape import resolve_image_shape

    root, _, _ = fmnist_folder
    config = train_config("quick", data=str(root))
    shape = resolve_image_shape(config, folder_source(root), pretrained("fmnist"))
    assert shape.chw == (1, 28, 28)


def test_a_folder_holding_only_train_is_refused(tmp_path):
    """Before: train/ was read as the folder's one class named "train"."""
    data = tmp_path / "data"
    _two_classes(data / "train")
    message = (rf"argument 'data': {data} holds only train/ \(no test/ or val/ beside it\); expected train/ \+ "
               r"test/ \(or val/\), or one sub-folder per class")
    with pytest.raises(ValueError, match=message):
        load_image_folder(data)
    with pytest.raises(ValueError, match=message):
        train_classifier(train_config("quick", data=str(data)), tmp_path / "run", progress=False)
