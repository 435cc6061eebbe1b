"""Loading the compiled extension (diffaug_fast._C); what a backend needs to know about it and about Triton."""
from __future__ import annotations

import logging
import os
from types import ModuleType

REBUILD_HINT = "rebuild it with `pip install --no-build-isolation -e .` from the source tree (see README)"

try:
    from diffaug_fast import _C as _ext  # registers torch.ops.diffaug_fast.{diffuse, denoise_epilogue}
    _EXT_ERROR: str | None = None
except ImportError as err:  # missing or broken build: the reference backend still works
    _ext = None
    _EXT_ERROR = str(err)


class _NoCudaRuntimeNote(logging.Filter):
    """Drops the one warning torch.utils.cpp_extension logs when it is imported on a machine with a CUDA toolkit
    (nvcc or $CUDA_HOME) but no GPU: "No CUDA runtime is found, using CUDA_HOME=...". Inductor imports that module
    on every compiled CPU run, where the note is noise; its other messages pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No CUDA runtime is found")


logging.getLogger("torch.utils.cpp_extension").addFilter(_NoCudaRuntimeNote())


class ExtensionUnavailableError(RuntimeError):
    """The compiled kernels (diffaug_fast._C) are missing or failed to load."""


def extension() -> ModuleType:
    if _ext is None:
        raise ExtensionUnavailableError(
            f"diffaug_fast._C, the compiled kernels, could not be loaded ({_EXT_ERROR}); {REBUILD_HINT}. "
            "The 'reference' backend works without it.")
    return _ext


def extension_error() -> str | None:
    """Why the compiled kernels did not load (None when they did)."""
    return _EXT_ERROR


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


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("diffaug-fast")
    except Exception:
        return "unknown"
