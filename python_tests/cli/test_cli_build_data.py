"""The installed package: build facts, the CLI, and real Fashion-MNIST."""
import json
import subprocess
import sys

import pytest
import torch

import diffaug_fast
from diffaug_fast.data import FASHION_MNIST_CLASSES, load_fashion_mnist


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "diffaug_fast.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_build_info_reports_compiled_backends():
    info = diffaug_fast.build_info()
    assert info["torch"] == torch.__version__
    assert info["backends"]["reference"]["usable"]
    ext = info["extension"]
    assert ext["loaded"], ext["error"]
    assert info["backends"]["cpu"]["usable"]
    if torch.version.cuda:  # a CUDA torch on a machine with nvcc: the CUDA kernels were compiled too
        assert ext["with_cuda"] and ext["cuda_archs"], ext
    assert hasattr(torch.ops.diffaug_fast, "diffuse") and hasattr(torch.ops.diffaug_fast, "denoise_epilogue")


@pytest.mark.slow  # a CLI subprocess
def test_cli_info_json():
    out = _cli("info", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["extension"]["loaded"]


@pytest.mark.slow  # a CLI subprocess on real images
def test_cli_diffuse_real_run(tmp_path):
    out = _cli("diffuse", "--limit", "500", "--out", str(tmp_path), "--t", "0,500,999")
    assert out.returncode == 0, out.stderr
    assert "images/s" in out.stdout
    png = tmp_path / "forward_process.png"
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # a CLI subprocess per case
@pytest.mark.parametrize("args, match", [
    (["diffuse", "--t", "0,1000"], "argument 't' must lie in [0, 999]"),
    (["diffuse", "--data-root", "/nonexistent"], "apt-get install dataset-fashion-mnist"),
    (["diffuse", "--backend", "nope"], "argument --backend: invalid choice: 'nope'"),
])
def test_cli_errors_are_one_line_exit_2(args, match):
    out = _cli(*args)
    assert out.returncode == 2
    assert match in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_fashion_mnist_is_real():
    x, y = load_fashion_mnist("test")
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() == -1 and x.max() == 1
    assert torch.equal(y.bincount(), torch.full((10,), 1000))
    assert len(FASHION_MNIST_CLASSES) == 10
    xtr, ytr = load_fashion_mnist("train", limit=100)
    assert xtr.shape == (100, 1, 28, 28) and ytr.shape == (100,)
    # Known first labels of the official test split: ankle boot, pullover, trouser, trouser.
    assert y[:4].tolist() == [9, 2, 1, 1]


def test_fashion_mnist_missing_names_the_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("test", root=tmp_path)
    with pytest.raises(ValueError, match="'split' must be 'train' or 'test'"):
        load_fashion_mnist("val")
