"""``--data cifar10:DIR`` / ``cifar100:DIR``: the official CIFAR python batches, written here in small fake copies
laid out exactly as the official files (pickle protocol 2, bytes keys, uint8 [N, 3072] RGB planes): values and
labels round-trip, class names, grayscale / resize as the image-folder loader does them, limit, both folder
layouts, clear errors, and pickles naming anything but numpy's array reconstruction are refused unrun."""
import codecs
import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from diffaug_fast.config import train_config
from diffaug_fast.data import dataset_classes, load_dataset, load_image_folder
from diffaug_fast.data.cifar import cifar_source

PER_BATCH = 20
C10_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
C100_FINE = [f"fine{i}".encode() for i in range(100)]
C100_COARSE = [f"coarse{i}".encode() for i in range(20)]


def _pattern(k: int) -> np.ndarray:
    """A known image, uint8 [3, 32, 32]: every (channel, row, column) its own value, shifted by k."""
    c, h, w = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    return ((c * 80 + h * 7 + w * 3 + k * 11) % 256).astype(np.uint8)


def _images(first: int, n: int) -> np.ndarray:
    """n official rows: image i flattened as its R, G, B planes, each row-major."""
    return np.stack([_pattern(first + i).reshape(3072) for i in range(n)])


def _dump(path, obj, protocol=2):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def write_cifar10(root, per_batch=PER_BATCH, names=C10_NAMES, protocol=2):
    root.mkdir(parents=True, exist_ok=True)
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(files):
        first = b * per_batch
        _dump(root / name, {b"batch_label": f"fake batch {b}".encode(),
                            b"labels": [(first + i) % len(names) for i in range(per_batch)],
                            b"data": _images(first, per_batch),
                            b"filenames": [f"img_{first + i}.png".encode() for i in range(per_batch)]}, protocol)
    _dump(root / "batches.meta", {b"num_cases_per_batch": per_batch, b"label_names": list(names), b"num_vis": 3072},
          protocol)
    return root


def write_cifar100(root, n_train=40, n_test=20):
    root.mkdir(parents=True, exist_ok=True)
    for name, first, n in (("train", 0, n_train), ("test", 1000, n_test)):
        _dump(root / name, {b"filenames": [f"f{first + i}.png".encode() for i in range(n)],
                            b"batch_label": f"{name} batch".encode(),
                            b"fine_labels": [(first + 3 * i) % 100 for i in range(n)],
                            b"coarse_labels": [(first + 3 * i) % 20 for i in range(n)],
                            b"data": _images(first, n)})
    _dump(root / "meta", {b"fine_label_names": C100_FINE, b"coarse_label_names": C100_COARSE})
    return root


def _scaled(pattern: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pattern.astype(np.float32) / 127.5 - 1.0)


@pytest.fixture
def c10(tmp_path):
    return write_cifar10(tmp_path / "c10")


def test_cifar10_values_and_labels_round_trip(c10):
    x, y = load_dataset(f"cifar10:{c10}", "train", image_size=32, channels=3)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.shape == (5 * PER_BATCH, 3, 32, 32) and y.shape == (5 * PER_BATCH,)
    for k in (0, 1, PER_BATCH, 5 * PER_BATCH - 1):  # the batches in order 1..5
        torch.testing.assert_close(x[k], _scaled(_pattern(k)), rtol=0, atol=1e-6)
    assert x[0, 0, 0, 0] == -1.0 and x[0, 0, 0, 1] == pytest.approx(3 / 127.5 - 1)  # red plane, row-major
    assert x[0, 1, 0, 0] == pytest.approx(80 / 127.5 - 1) and x[0, 0, 1, 0] == pytest.approx(7 / 127.5 - 1)
    assert x.min() >= -1 and x.max() <= 1
    assert y.tolist() == [k % 10 for k in range(5 * PER_BATCH)]
    xt, yt = load_dataset(f"cifar10:{c10}", "test", image_size=32, channels=3)
    assert xt.shape == (PER_BATCH, 3, 32, 32)
    torch.testing.assert_close(xt[3], _scaled(_pattern(5 * PER_BATCH + 3)), rtol=0, atol=1e-6)
    assert yt.tolist() == [(5 * PER_BATCH + i) % 10 for i in range(PER_BATCH)]


def test_cifar10_class_names_from_the_meta_file(tmp_path):
    names = [b"alpha", b"beta", b"gamma"]
    root = write_cifar10(tmp_path / "c", names=names)
    assert dataset_classes(f"cifar10:{root}") == ["alpha", "beta", "gamma"]
    assert load_dataset(f"cifar10:{root}", image_size=32, channels=3)[1].max() == 2


def test_cifar100_fine_labels_and_names(tmp_path):
    root = write_cifar100(tmp_path / "c100")
    assert dataset_classes(f"cifar100:{root}") == [n.decode() for n in C100_FINE]
    x, y = load_dataset(f"cifar100:{root}", "train", image_size=32, channels=3)
    assert x.shape == (40, 3, 32, 32) and y.tolist() == [(3 * i) % 100 for i in range(40)]
    torch.testing.assert_close(x[7], _scaled(_pattern(7)), rtol=0, atol=1e-6)
    xt, yt = load_dataset(f"cifar100:{root}", "test", image_size=32, channels=3)
    assert xt.shape == (20, 3, 32, 32) and yt[1] == 3 and yt[0] == 1000 % 100
    torch.testing.assert_close(xt[2], _scaled(_pattern(1002)), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind, folder, writer", [("cifar10", "cifar-10-batches-py", write_cifar10),
                                                  ("cifar100", "cifar-100-python", write_cifar100)])
def test_both_folder_layouts(tmp_path, kind, folder, writer):
    writer(tmp_path / folder)
    direct = load_dataset(f"{kind}:{tmp_path / folder}", image_size=32, channels=3)
    parent = load_dataset(f"{kind}:{tmp_path}", image_size=32, channels=3)
    assert torch.equal(direct[0], parent[0]) and torch.equal(direct[1], parent[1])
    assert dataset_classes(f"{kind}:{tmp_path}") == dataset_classes(f"{kind}:{tmp_path / folder}")
    train_config("quick", data=f"{kind}:{tmp_path}").validate()


@pytest.mark.parametrize("image_size, channels", [(32, 1), (28, 1), (28, 3), (48, 3), (16, 1)])
def test_grayscale_and_resize_as_the_image_folder_loader(tmp_path, c10, image_size, channels):
    """The same pictures written as lossless PNGs into an image folder load to the very same tensors."""
    rgb, _ = load_dataset(f"cifar10:{c10}", "test", image_size=32, channels=3)
    raw = ((rgb[:4] + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    folder = tmp_path / "pngs"
    for i, im in enumerate(raw):
        for split in ("train", "test"):
            (folder / split / f"class{i}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(im).save(folder / split / f"class{i}" / "a.png")
    want, _ = load_image_folder(folder, "test", image_size=image_size, channels=channels)
    got, _ = load_dataset(f"cifar10:{c10}", "test", image_size=image_size, channels=channels, limit=4)
    assert got.shape == (4, channels, image_size, image_size)
    assert torch.equal(got, want)
    if channels == 1 and image_size == 32:  # PIL's ITU-R 601-2 luma of the known pattern
        luma = np.asarray(Image.fromarray(_pattern(5 * PER_BATCH).transpose(1, 2, 0)).convert("L"))
        torch.testing.assert_close(got[0, 0], _scaled(luma), rtol=0, atol=1e-6)


def test_limit_takes_the_first_images(c10):
    full_x, full_y = load_dataset(f"cifar10:{c10}", image_size=32, channels=3)
    for limit in (1, 7, PER_BATCH, PER_BATCH + 5, 1000):
        x, y = load_dataset(f"cifar10:{c10}", limit=limit, image_size=32, channels=3)
        assert torch.equal(x, full_x[:limit]) and torch.equal(y, full_y[:limit])


def test_other_pickle_protocols_and_the_numpy1_name(tmp_path):
    """Protocol 5 (numpy's _frombuffer) and the module name numpy 1 / Python 2 wrote (numpy.core.multiarray)."""
    want = load_dataset(f"cifar10:{write_cifar10(tmp_path / 'p2')}", image_size=32, channels=3)
    p5 = write_cifar10(tmp_path / "p5", protocol=5)
    assert torch.equal(load_dataset(f"cifar10:{p5}", image_size=32, channels=3)[0], want[0])
    old = write_cifar10(tmp_path / "old")
    for name in [f"data_batch_{i}" for i in range(1, 6)]:
        body = (old / name).read_bytes()
        assert b"numpy._core.multiarray\n_reconstruct" in body or b"numpy.core.multiarray\n_reconstruct" in body
        (old / name).write_bytes(body.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    assert torch.equal(load_dataset(f"cifar10:{old}", image_size=32, channels=3)[0], want[0])


# ---------------------------------------------------------------------------------------------------------------
# Errors


def test_missing_batch_file_is_named(c10):
    (c10 / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match=r"--data.*data_batch_3"):
        load_dataset(f"cifar10:{c10}", image_size=32, channels=3)
    with pytest.raises(FileNotFoundError, match="data_batch_3"):  # a limit does not hide it
        load_dataset(f"cifar10:{c10}", limit=5, image_size=32, channels=3)
    (c10 / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match=r"--data.*test_batch"):
        load_dataset(f"cifar10:{c10}", "test", image_size=32, channels=3)
    (c10 / "batches.meta").unlink()
    with pytest.raises(FileNotFoundError, match=r"--data.*batches\.meta"):
        dataset_classes(f"cifar10:{c10}")


def test_cifar100_prefix_on_cifar10_files_says_so(c10):
    with pytest.raises(FileNotFoundError, match=r"train.*use --data cifar10:"):
        load_dataset(f"cifar100:{c10}", image_size=32, channels=3)


@pytest.mark.parametrize("cut", [0, 1, 50, 2000])
def test_truncated_pickle(c10, cut):
    path = c10 / "data_batch_2"
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(ValueError, match=r"--data.*data_batch_2.*truncated or corrupt"):
        load_dataset(f"cifar10:{c10}", image_size=32, channels=3)


def test_garbage_file(c10):
    (c10 / "test_batch").write_bytes(b"PK\x03\x04 this is a zip, not a pickle" * 10)
    with pytest.raises(ValueError, match=r"test_batch.*truncated or corrupt"):
        load_dataset(f"cifar10:{c10}", "test", image_size=32, channels=3)


def _batch(**changes):
    batch = {b"batch_label": b"x", b"labels": [i % 10 for i in range(PER_BATCH)], b"data": _images(0, PER_BATCH),
             b"filenames": [b"a.png"] * PER_BATCH}
    batch.update({k.encode(): v for k, v in changes.items()})
    return {k: v for k, v in batch.items() if v is not None}


@pytest.mark.parametrize("bad, message", [
    ([_batch()], r"holds a list, expected the dict"),
    (_batch(data=np.zeros((PER_BATCH, 3000), np.uint8)), r"shape \[N, 3072\].*\[20, 3000\]"),
    (_batch(data=np.zeros((PER_BATCH, 3, 32, 32), np.uint8)), r"shape \[N, 3072\]"),
    (_batch(data=np.zeros((PER_BATCH, 3072), np.float32)), r"uint8.*float32"),
    (_batch(data=[[0] * 3072] * PER_BATCH), r"uint8 array.*found a list"),
    (_batch(labels=[0] * (PER_BATCH - 1)), r"20 images but 19 labels"),
    (_batch(labels=[b"cat"] * PER_BATCH), r"integer labels"),
    (_batch(labels=[10] * PER_BATCH), r"labels outside 0\.\.9"),
    (_batch(labels=None), r"lacks the key"),
    (_batch(data=None), r"lacks the key"),
])
def test_wrong_contents(c10, bad, message):
    _dump(c10 / "data_batch_4", bad)
    with pytest.raises(ValueError, match=r"--data.*data_batch_4.*" + message):
        load_dataset(f"cifar10:{c10}", image_size=32, channels=3)


def test_wrong_meta(c10):
    _dump(c10 / "batches.meta", {b"names": C10_NAMES})
    with pytest.raises(ValueError, match=r"batches\.meta.*label_names"):
        dataset_classes(f"cifar10:{c10}")


@pytest.mark.parametrize("data", ["cifar11:{d}", "CIFAR10:{d}", "cifar:{d}", "cifar-10:{d}"])
def test_unknown_prefix(c10, data):
    data = data.format(d=c10)
    with pytest.raises(ValueError, match=r"--data.*unknown data set prefix.*cifar10:DIR"):
        load_dataset(data)
    with pytest.raises(ValueError, match="unknown data set prefix"):
        dataset_classes(data)
    with pytest.raises(ValueError, match="unknown data set prefix"):
        train_config("quick", data=data)


def test_missing_folder(tmp_path):
    for data in (f"cifar10:{tmp_path / 'nope'}", f"cifar100:{tmp_path / 'nope'}"):
        with pytest.raises(FileNotFoundError, match=r"--data.*nope.*not a folder"):
            train_config("quick", data=data)
        with pytest.raises(FileNotFoundError, match=r"--data.*nope.*not a folder"):
            load_dataset(data)
    with pytest.raises(ValueError, match="name the folder"):
        cifar_source("cifar10:")


def test_validate_accepts_an_existing_folder_and_leaves_others_alone(c10, tmp_path):
    train_config("quick", data=f"cifar10:{c10}", image_size=32, channels=3).validate()
    assert cifar_source("fmnist") is None and cifar_source(str(tmp_path)) is None
    odd = tmp_path / "cifar11:odd"  # an image folder that happens to look like a prefix stays a folder
    odd.mkdir()
    assert cifar_source(str(odd)) is None


# ---------------------------------------------------------------------------------------------------------------
# Pickles that name anything but numpy's array reconstruction


class _Payload:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("func, args, named", [
    (os.system, ("touch {marker}",), "system"),
    (eval, ("open({marker!r}, 'w').close()",), "eval"),  # protocol 2 names it __builtin__.eval
    (shutil.rmtree, ("{marker}",), "shutil.rmtree"),
    (codecs.encode, ("abc", "rot13"), None),  # _codecs.encode is allowed for latin-1 bytes only
])
@pytest.mark.parametrize("protocol", [2, 5])
def test_forbidden_globals_are_refused_unrun(c10, tmp_path, func, args, named, protocol):
    marker = tmp_path / "ran"
    args = tuple(a.format(marker=str(marker)) for a in args)
    batch = _batch(batch_label=_Payload(func, *args))
    _dump(c10 / "data_batch_1", batch, protocol)
    if named:
        assert named.split(".")[-1].encode() in (c10 / "data_batch_1").read_bytes()
        with pytest.raises(ValueError, match=rf"data_batch_1.*refers to \S*{named}.*refusing"):
            load_dataset(f"cifar10:{c10}", image_size=32, channels=3)
    else:
        with pytest.raises(ValueError, match=r"data_batch_1.*latin-1"):
            load_dataset(f"cifar10:{c10}", image_size=32, channels=3)
    assert not marker.exists()


def test_forbidden_global_in_the_meta_file(c10, tmp_path):
    marker = tmp_path / "ran"
    _dump(c10 / "batches.meta", {b"label_names": C10_NAMES, b"x": _Payload(os.system, f"touch {marker}")})
    with pytest.raises(ValueError, match=r"batches\.meta.*refusing"):
        dataset_classes(f"cifar10:{c10}")
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_train_classifier_end_to_end(tmp_path):
    """The real trainer on 64 fake CIFAR-10 images (plus 16 to test on) writes its metrics and class names."""
    names = [b"red", b"green", b"blue", b"gray"]
    root = write_cifar10(tmp_path / "cifar-10-batches-py", per_batch=16, names=names)
    config = train_config("quick", data=f"cifar10:{tmp_path}", channels=3, image_size=32, diffaug="off",
                          de_timesteps=[], batch_size=16, compile="off", epochs=1, train_limit=64)
    out = tmp_path / "run"
    from diffaug_fast.train.classifier import train_classifier

    metrics = train_classifier(config, out, progress=False)
    assert root.is_dir() and (out / "metrics.json").is_file()
    assert json.loads((out / "classes.json").read_text()) == ["red", "green", "blue", "gray"]
    assert metrics["step"] == 64 // 16


@pytest.mark.slow
def test_train_denoiser_reads_cifar_at_the_unets_size(tmp_path):
    """train-denoiser takes the same cifar10:DIR source: one step on 16 fake images at 32x32 RGB."""
    from diffaug_fast.config import DenoiserConfig
    from diffaug_fast.runs.checkpoint import load_verified
    from diffaug_fast.train.denoiser import load_images, train_denoiser

    write_cifar10(tmp_path / "cifar-10-batches-py", per_batch=16)
    config = DenoiserConfig(data=f"cifar10:{tmp_path}", image_size=32, channels=3, steps=1, batch_size=8, limit=16,
                            warmup=1)
    images = load_images(config)
    assert images.shape == (16, 3, 32, 32) and -1 <= images.min() and images.max() <= 1
    state = load_verified(train_denoiser(config, tmp_path / "run", progress=False))
    assert state["step"] == 1 and state["config"]["data"] == f"cifar10:{tmp_path}"


# ---------------------------------------------------------------------------------------------------------------
# Issue 37: CIFAR sets its own shape when --image-size / --channels are left auto (before: 1x28x28, said nowhere)


def test_cifar_trains_at_its_own_shape_without_shape_flags(tmp_path):
    from diffaug_fast.train.classifier import train_classifier
    from diffaug_fast.train.report import write_report

    write_cifar10(tmp_path / "cifar-10-batches-py", per_batch=16)
    config = train_config("quick", data=f"cifar10:{tmp_path}", diffaug="off", de_timesteps=[], batch_size=16,
                          compile="off", train_limit=32, eval_limit=8)
    assert (config.data.image_size, config.data.channels) == (None, None)  # auto
    out = tmp_path / "run"
    metrics = train_classifier(config, out, progress=False)
    assert metrics["image_shape"] == [3, 32, 32] and metrics["image_shape_from"] == "from the data"
    saved = json.loads((out / "config.json").read_text())["data"]
    assert (saved["image_size"], saved["channels"]) == (32, 3)  # resume and evaluation read the values used
    assert "Images 3x32x32 (from the data)." in write_report(out).read_text()
    assert config.data.image_size is None  # the caller's config is left as it was


def test_cifar_with_the_fashion_mnist_denoiser_is_refused_naming_both(c10, tmp_path):
    from diffaug_fast.errors import DiffAugError
    from diffaug_fast.train.classifier import train_classifier

    config = train_config("quick", data=f"cifar10:{c10}", batch_size=16, compile="off")
    with pytest.raises(DiffAugError) as err:
        train_classifier(config, tmp_path / "run", progress=False)
    assert str(err.value) == (
        f"argument --denoiser: 'fmnist' works on 1x28x28 images but --data cifar10:{c10} gives 3x32x32 (the network "
        "takes 1-channel images, the data have 3 channels); set --image-size / --channels or pass a denoiser trained "
        "on these images")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_shape_flags_still_win_and_the_origin_is_said(c10):
    from diffaug_fast.data import native_shape, open_source
    from diffaug_fast.train.image_shape import resolve_image_shape

    data = f"cifar10:{c10}"
    source = open_source(data)
    assert native_shape(data) == native_shape(source) == (32, 3)
    shape = resolve_image_shape(train_config("quick", data=data, image_size=28, channels=1), source)
    assert shape.describe() == "1x28x28 (from the config)"
    shape = resolve_image_shape(train_config("quick", data=data, channels=1), source)
    assert shape.describe() == "1x32x32 (channels from the config, size from the data)"


def test_train_denoiser_reads_cifar_at_its_own_shape_without_shape_flags(tmp_path):
    from diffaug_fast.config import DenoiserConfig
    from diffaug_fast.train.denoiser import load_images, unet_settings, with_image_shape

    write_cifar10(tmp_path / "cifar-10-batches-py", per_batch=16)
    config = DenoiserConfig(data=f"cifar10:{tmp_path}", limit=8)
    resolved = with_image_shape(config)
    assert (resolved.image_size, resolved.channels) == (32, 3)
    assert (unet_settings(config)["image_size"], unet_settings(config)["in_channels"]) == (32, 3)
    assert load_images(config).shape == (8, 3, 32, 32)
