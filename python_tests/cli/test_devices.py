"""--device for the commands that run networks (train, train-denoiser, denoiser-report, sample, eval,
gradients, fidelity): the names it takes, the one-line errors, and OnDevice, which runs a network on the GPU for data made
on the CPU. The CUDA tests compare a GPU command with the same command on the CPU (run where a GPU is: scripts/gpu_check.sh commands)."""
import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from diffaug_fast.config import SampleOptions
from diffaug_fast.devices import OnDevice, run_device
from diffaug_fast.errors import DiffAugError
from diffaug_fast.eval.guidance import _settings
from helpers import train_quick_classifier

CLI = [sys.executable, "-m", "diffaug_fast.cli"]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_device_names():
    assert run_device("cpu") == torch.device("cpu")
    assert run_device("auto") == (torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu"))
    with pytest.raises(ValueError, match="argument --device is 'gpu0'; expected auto, cpu, cuda or cuda:N"):
        run_device("gpu0")
    missing = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU (cuda:0 on a machine without one)
    with pytest.raises(DiffAugError, match=f"argument --device is '{missing}' but this machine has "
                                           f"{torch.cuda.device_count()} CUDA GPUs"):
        run_device(missing)


class _Recorder(torch.nn.Module):
    """Records where its inputs arrive; answers on the CPU (a meta tensor cannot be copied back)."""

    def __init__(self):
        super().__init__()
        self.seen, self.scale, self.head = [], 3, torch.nn.Linear(2, 2)

    def forward(self, x, t, *, offset=None):
        self.seen.append((x.device.type, t.device.type, None if offset is None else offset.device.type))
        return torch.ones(2)

    def per_t(self, x, label):
        self.seen.append((x.device.type, label))
        return torch.zeros(1)


def test_on_device_moves_every_tensor_of_a_call_and_its_methods():
    net = _Recorder()
    wrapped = OnDevice(net, "meta")  # the meta device stands in for a GPU: the moves are what is tested
    out = wrapped(torch.zeros(2, 3), torch.ones(2), offset=torch.tensor(5))
    assert net.seen == [("meta", "meta", "meta")] and out.device.type == "cpu"
    wrapped.per_t(torch.zeros(1), "label")  # methods move too; other arguments pass as they are
    assert net.seen[-1] == ("meta", "label")
    assert wrapped.scale == 3 and wrapped.head is net.head  # plain attributes and submodules pass through


def test_on_device_keeps_values_and_gradients():
    """Gradients with respect to the input flow back through the moves (what `gradients` relies on)."""
    torch.manual_seed(0)
    net = torch.nn.Linear(5, 3)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    on = OnDevice(copy.deepcopy(net).to(device), device)
    x = torch.randn(4, 5, requires_grad=True)
    y, y_ref = on(x), net(x)
    assert y.device == x.device
    (g,) = torch.autograd.grad(y.square().sum(), x)
    (g_ref,) = torch.autograd.grad(y_ref.square().sum(), x)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-5)


def test_where_a_draw_runs_is_not_part_of_it():
    assert "device" not in _settings(SampleOptions(device="cuda:1"))
    assert _settings(SampleOptions(device="cpu")) == _settings(SampleOptions(device="auto"))


def test_sample_and_eval_take_device_cpu(tmp_path):
    out = subprocess.run(CLI + ["sample", "--device", "cpu", "--num", "2", "--steps", "ddim2", "--out",
                                str(tmp_path / "s")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert np.load(tmp_path / "s" / "samples.npz")["images"].shape == (2, 1, 28, 28)


def _sample(tmp_path, device, *extra):
    # fp32 on both: `auto` is bf16 on a GPU that computes it natively and fp32 on most CPUs, which is not the
    # rounding this test compares (an H200 run with `auto` failed it)
    out = subprocess.run(CLI + ["sample", "--device", device, "--num", "8", "--batch-size", "4", "--steps", "ddim10",
                                "--denoiser-precision", "fp32", "--out", str(tmp_path / device), *extra],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return np.load(tmp_path / device / "samples.npz")["images"].astype(int)


@needs_cuda
def test_cuda_sample_draws_the_cpu_draw(tmp_path):
    """The same Philox noise on both devices: the images differ by the networks' float rounding only."""
    cpu, gpu = _sample(tmp_path, "cpu"), _sample(tmp_path, "cuda")
    close = np.abs(cpu - gpu) <= 2
    assert close.mean() > 0.99, (close.mean(), np.abs(cpu - gpu).max())


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    return train_quick_classifier(tmp_path_factory.mktemp("clean-run"))


@needs_cuda
def test_cuda_eval_agrees_with_the_cpu(clean_run, tmp_path):
    results = {}
    for device in ("cpu", "cuda"):
        args = ["eval", str(clean_run), "--device", device, "--limit", "200", "--certify-limit", "4", "--n", "50",
                "--de-timesteps", "0,200", "--denoiser-precision", "fp32", "--out", str(tmp_path / device)]
        out = subprocess.run(CLI + args, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stderr
        results[device] = json.loads((tmp_path / device / "eval.json").read_text())
    cpu, gpu = results["cpu"], results["cuda"]
    assert abs(cpu["clean_acc"] - gpu["clean_acc"]) <= 0.01
    assert abs(cpu["corruptions"]["mean_acc"] - gpu["corruptions"]["mean_acc"]) <= 0.01
    assert abs(cpu["corruptions"]["mean_de_acc"] - gpu["corruptions"]["mean_de_acc"]) <= 0.02
    for name in cpu["ood"]:
        assert abs(cpu["ood"][name]["msp"]["auroc"] - gpu["ood"][name]["msp"]["auroc"]) <= 0.01
    assert set(gpu["certify"]) == set(cpu["certify"])


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_auto_is_this_process_gpu(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert run_device("auto") == torch.device("cuda", 1)


@needs_cuda
def test_cuda_gradients_agree_with_the_cpu(tmp_path):
    run = train_quick_classifier(tmp_path / "noisy", mode="noisy")
    cosines = {}
    for device in ("cpu", "cuda"):
        out = subprocess.run(CLI + ["gradients", "--classifier", str(run), "--images", "16", "--t", "100,500",
                                    "--device", device, "--out", str(tmp_path / device)],
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr
        cosines[device] = json.loads((tmp_path / device / "gradient_alignment.json").read_text())
    for cpu, cuda in zip(cosines["cpu"]["classifiers"], cosines["cuda"]["classifiers"]):
        for t, value in cpu["cosine"].items():
            assert abs(value - cuda["cosine"][t]) < 0.02, (cpu["name"], t, value, cuda["cosine"][t])


def _report(tmp_path, device):
    out = subprocess.run(CLI + ["denoiser-report", "--device", device, "--limit", "64", "--samples", "4", "--out",
                                str(tmp_path / f"report-{device}")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads((tmp_path / f"report-{device}" / "x0_mse_per_t.json").read_text())


def test_denoiser_report_takes_device_cpu(tmp_path):
    rows = _report(tmp_path, "cpu")
    assert len(rows) == 10 and all(0 < r["x0_mse"] < r["mean_image_mse"] * 4 for r in rows)


@needs_cuda
def test_cuda_denoiser_report_agrees_with_the_cpu(tmp_path):
    for cpu, gpu in zip(_report(tmp_path, "cpu"), _report(tmp_path, "cuda")):
        assert gpu["x0_mse"] == pytest.approx(cpu["x0_mse"], rel=0.02), (cpu, gpu)
