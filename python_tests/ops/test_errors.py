"""Bad input gets one clear error that names the argument and what was expected."""
import pytest
import torch

from diffaug_fast import BackendUnavailableError, denoise_epilogue, diffuse
from diffaug_fast.ops import resolve_backend
from helpers import python_without_extension


def _x(b=2):
    return torch.randn(b, 1, 4, 4)


@pytest.mark.parametrize("call, match", [
    (lambda: diffuse([1.0], 1.0, 1.0, seed=0), r"argument 'x0' must be a torch.Tensor"),
    (lambda: diffuse(torch.tensor(1.0), 1.0, 1.0, seed=0), r"'x0' must have at least 1 dimension"),
    (lambda: diffuse(_x().double(), 1.0, 1.0, seed=0), r"'x0' has dtype torch.float64; expected float32"),
    (lambda: diffuse(_x().int(), 1.0, 1.0, seed=0), r"'x0' has dtype torch.int32"),
    (lambda: diffuse(_x(), torch.ones(3), 1.0, seed=0), r"'a' must have shape \[2\] \(one value per example\)"),
    (lambda: diffuse(_x(), torch.ones(2, 1), 1.0, seed=0), r"'a' must have shape \[2\]"),
    (lambda: diffuse(_x(), 1.0, torch.tensor([1.0, float("nan")]), seed=0), r"'s' contains NaN or Inf"),
    (lambda: diffuse(_x(), torch.tensor([float("inf"), 1.0]), 1.0, seed=0), r"'a' contains NaN or Inf"),
    (lambda: diffuse(_x(), torch.ones(2, device="meta"), 1.0, seed=0), r"'a' is on meta; expected cpu"),
    (lambda: diffuse(_x(), 1.0, 1.0, seed=-1), r"'seed' must be in \[0, 2\*\*63 - 1\]"),
    (lambda: diffuse(_x(), 1.0, 1.0, seed=1.5), r"'seed' must be an int"),
    (lambda: diffuse(_x(), 1.0, 1.0, seed=0, offset=-3), r"'offset' must be in"),
    (lambda: diffuse(_x(), 1.0, 1.0, seed=0, noise=torch.randn(2, 1, 4, 5)), r"'noise' must have the shape of x0"),
    (lambda: diffuse(_x(), 1.0, 1.0, seed=0, noise=torch.randn(2, 1, 4, 4, device="meta")), r"'noise' is on meta"),
    (lambda: diffuse(_x(), 1.0, 1.0, seed=0, backend="gpu"), r"argument 'backend' is 'gpu'; expected 'auto' or one"),
    (lambda: denoise_epilogue(_x(), _x(), 1.0, 1.0, parametrization="eps2"), r"'parametrization' is 'eps2'"),
    (lambda: denoise_epilogue(_x(), torch.randn(2, 2, 4, 4), 1.0, 1.0), r"pass learn_sigma=True"),
    (lambda: denoise_epilogue(_x(), _x(), 1.0, 1.0, learn_sigma=True), r"must have shape \[2, 2, 4, 4\]"),
    (lambda: denoise_epilogue(_x(), _x(), 1.0, 1.0, clip=-1.0), r"'clip' must be a positive number"),
    (lambda: denoise_epilogue(_x(), _x(), torch.tensor([0.0, 1.0]), 1.0), r"'a' has zeros"),
    (lambda: denoise_epilogue(_x(), _x(), 1.0, 1.0, backend="cuda"), r"backend 'cuda' .* cannot run here"),
])
def test_bad_input_is_named(call, match):
    with pytest.raises((ValueError, TypeError, BackendUnavailableError), match=match):
        call()


def test_env_var_selects_backend_and_is_validated(monkeypatch):
    monkeypatch.setenv("DIFFAUG_FAST_BACKEND", "reference")
    assert resolve_backend(None, torch.device("cpu")) == "reference"
    monkeypatch.setenv("DIFFAUG_FAST_BACKEND", "fastest")
    with pytest.raises(ValueError, match=r"\$DIFFAUG_FAST_BACKEND is 'fastest'"):
        resolve_backend(None, torch.device("cpu"))


@pytest.mark.slow  # a Python subprocess (imports torch: ~4 s)
def test_missing_extension_is_explained_and_reference_still_works():
    """Simulate a missing build: import of diffaug_fast._C fails."""
    code = (
        "import torch, diffaug_fast\n"
        "from diffaug_fast import diffuse, build_info\n"
        "x = torch.zeros(2, 3)\n"
        "assert diffuse(x, 1.0, 0.0, seed=0).abs().max() == 0  # auto falls back to reference\n"
        "assert not build_info()['extension']['loaded']\n"
        "try:\n"
        "    diffuse(x, 1.0, 0.0, seed=0, backend='cpu')\n"
        "except diffaug_fast.BackendUnavailableError as e:\n"
        "    print('ERR', e)\n")
    out = python_without_extension(code)
    assert out.returncode == 0, out.stderr
    assert "ERR backend 'cpu'" in out.stdout and "pip install --no-build-isolation" in out.stdout
