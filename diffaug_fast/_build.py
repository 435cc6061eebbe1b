"""Loading the compiled extension, and what this install can do (``build_info``)."""
from __future__ import annotations

import os
import platform
from types import ModuleType

import torch

REBUILD_HINT = "rebuild it with `pip install --no-build-isolation -e .` from the source tree (see README)"

try:
    from diffaug_fast import _C as _ext  # registers torch.ops.diffaug_fast.{diffuse, denoise_epilogue}
    _EXT_ERROR: str | None = None
except ImportError as err:  # missing or broken build: the reference backend still works
    _ext = None
    _EXT_ERROR = str(err)


class ExtensionUnavailableError(RuntimeError):
    """The compiled kernels (diffaug_fast._C) are missing or failed to load."""


def extension() -> ModuleType:
    if _ext is None:
        raise ExtensionUnavailableError(
            f"diffaug_fast._C, the compiled kernels, could not be loaded ({_EXT_ERROR}); {REBUILD_HINT}. "
            "The 'reference' backend works without it.")
    return _ext


def has_extension() -> bool:
    return _ext is not None


def extension_has_cuda() -> bool:
    return _ext is not None and bool(_ext.with_cuda)


def triton_import_error() -> str | None:
    try:
        import triton  # noqa: F401
    except Exception as err:  # triton is optional off Linux/x86
        return str(err)
    return None


def triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def build_info() -> dict:
    """Versions, and which backends are compiled and usable on this machine."""
    from diffaug_fast.ops.backends import backend_status

    info = {
        "diffaug_fast": _package_version(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_threads": torch.get_num_threads(),
        "extension": {"loaded": _ext is not None, "error": _EXT_ERROR},
        "backends": {name: {"usable": ok, "why": why} for name, (ok, why) in backend_status().items()},
    }
    if _ext is not None:
        info["extension"].update({
            "path": _ext.__file__,
            "with_cuda": bool(_ext.with_cuda),
            "cuda_archs": _ext.cuda_archs.split(",") if _ext.cuda_archs else [],
            "cxx_compiler": _ext.cxx_compiler,
            "cuda_compiler": _ext.cuda_compiler.strip() or None,
        })
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception:
        info["triton"] = None
    return info


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("diffaug-fast")
    except Exception:
        return "unknown"
