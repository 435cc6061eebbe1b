import os
from pathlib import Path

import pytest
import torch

# Without a GPU the Triton kernels run in Triton's interpreter; this must be set
# before triton.jit decorates them (our kernels module is imported lazily).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from diffaug_fast.ops import available_backends  # noqa: E402
from hypothesis import settings  # noqa: E402

# Fuzzing budget: 150 examples per property in CI; HYPOTHESIS_PROFILE=long (DIFFAUG_FAST_FUZZ_EXAMPLES, default
# 3000) for a longer session, e.g. under the sanitizers: HYPOTHESIS_PROFILE=long bash scripts/sanitize.sh -k fuzz
settings.register_profile("ci", max_examples=150)
settings.register_profile("long", max_examples=int(os.environ.get("DIFFAUG_FAST_FUZZ_EXAMPLES", "3000")))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _outside_the_checkout(tmp_path_factory):
    """Module fixtures run before the per-test directory below: they too start outside the checkout."""
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(previous)


@pytest.fixture(autouse=True)
def _own_directory(tmp_path, monkeypatch):
    """Every test runs in its own empty directory: a CLI call's default `--out runs/train` then never meets the run
    the README's first command left in the checkout (issue 37), nor another test's."""
    monkeypatch.chdir(tmp_path)


def _devices_and_backends():
    pairs = [("cpu", b) for b in available_backends("cpu") if b != "reference"]
    if torch.cuda.is_available():
        pairs += [("cuda", b) for b in available_backends("cuda") if b != "reference"]
    return pairs


FAST = _devices_and_backends()
FAST_IDS = [f"{d}-{b}" for d, b in FAST]


@pytest.fixture(params=FAST, ids=FAST_IDS)
def device_backend(request):
    """Each fast backend that can run here, with the device its tensors live on."""
    return request.param


def tolerance(dtype):
    return {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.bfloat16: dict(atol=2e-2, rtol=2e-2),
            torch.float16: dict(atol=2e-3, rtol=2e-3)}[dtype]
