"""Which backend runs an op: by argument, else $DIFFAUG_FAST_BACKEND, else by device."""
from __future__ import annotations

import os
import platform
import sys

import torch

from diffaug_fast.ops import extension as _build
from diffaug_fast.ops import reference

BACKENDS = ("reference", "cpu", "cuda", "triton")
ENV_VAR = "DIFFAUG_FAST_BACKEND"


class BackendUnavailableError(RuntimeError):
    """A backend was asked for that cannot run here."""


def _status(name: str, device_type: str | None) -> tuple[bool, str]:
    """(usable, why not) for a backend, optionally for tensors on a given device type."""
    if name == "reference":
        return True, ""
    if name in ("cpu", "cuda"):
        if not _build.has_extension():
            return False, f"diffaug_fast._C is not loaded ({_build.extension_error()}); {_build.REBUILD_HINT}"
        if name == "cuda":
            if not _build.extension_has_cuda():
                return False, "diffaug_fast._C was built without CUDA kernels (torch without CUDA, nvcc not found, " \
                              "or DIFFAUG_FAST_CUDA=0 at build time)"
            if not torch.cuda.is_available():
                return False, "no CUDA GPU is available"
        if device_type is not None and device_type != name:
            return False, f"the '{name}' backend runs on {name} tensors, these are on {device_type}"
        return True, ""
    if name == "triton":
        err = _build.triton_import_error()
        if err:
            return False, f"triton cannot be imported ({err})"
        on_gpu = torch.cuda.is_available() and device_type in (None, "cuda")
        if device_type == "cpu" or not on_gpu:
            if _build.triton_interpret():
                return True, ""
            return False, "triton needs CUDA tensors on a GPU, or TRITON_INTERPRET=1 to run its interpreter on CPU"
        return True, ""
    raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")


def backend_status(device_type: str | None = None) -> dict[str, tuple[bool, str]]:
    return {name: _status(name, device_type) for name in BACKENDS}


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    device_type = torch.device(device).type
    return [name for name, (ok, _) in backend_status(device_type).items() if ok]


def resolve_backend(backend: str | None, device: torch.device) -> str:
    """The backend to run on tensors on `device`; raises BackendUnavailableError with the reason."""
    source = "argument 'backend'"
    if backend is None:
        backend = os.environ.get(ENV_VAR) or "auto"
        source = f"${ENV_VAR}"
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"{source} is {backend!r}; expected 'auto' or one of {', '.join(BACKENDS)}")
    device_type = device.type
    if backend == "auto":
        order = ("cuda", "triton", "reference") if device_type == "cuda" else ("cpu", "reference")
        return next(name for name in order if _status(name, device_type)[0])
    ok, why = _status(backend, device_type)
    if not ok:
        raise BackendUnavailableError(f"backend {backend!r} (from {source}) cannot run here: {why}")
    return backend


def run_op(op: str, backend: str | None, device: torch.device, *args):
    """Run one op on the chosen backend: reference.<op>, diffaug_fast::<op>_triton or diffaug_fast::<op>."""
    name = resolve_backend(backend, device)
    if name == "reference":
        return getattr(reference, op)(*args)
    return getattr(torch.ops.diffaug_fast, f"{op}_triton" if name == "triton" else op)(*args)


PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PRECISION_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()


def _cpu_probe(name: str) -> bool:
    """torch.cpu's own feature probe ``name`` (absent in older torch: False)."""
    return bool(getattr(torch.cpu, name, lambda: False)())


def _not_a_cpu_verdict(device: torch.device, dtype: str, min_sm: int) -> tuple[bool, str] | None:
    """(native, why) of ``dtype`` on a non-CPU device: CUDA GPUs from compute capability ``min_sm``.0 on; None for
    a CPU, which each dtype checks by its own flags."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False, "no CUDA GPU"
        major, minor = torch.cuda.get_device_capability(device)
        name = torch.cuda.get_device_name(device)
        if major >= min_sm:
            return True, f"{name} is sm_{major}{minor} ({dtype} tensor cores from sm_{min_sm}0)"
        return False, f"{name} is sm_{major}{minor}, older than sm_{min_sm}0 (no {dtype} tensor cores)"
    if device.type != "cpu":
        return False, f"{device.type} devices are not checked for {dtype}"
    return None


def native_bf16(device: torch.device | str = "cpu") -> tuple[bool, str]:
    """(bf16 is computed natively here, why): CPUs with avx512_bf16 or AMX, CUDA GPUs of compute capability >= 8.0."""
    verdict = _not_a_cpu_verdict(torch.device(device), "bf16", 8)
    if verdict is not None:
        return verdict
    flags = _cpu_flags()
    if _cpu_probe("_is_amx_tile_supported") or "amx_bf16" in flags:
        return True, "the CPU has AMX (bf16 tile matmul)"
    if _cpu_probe("_is_avx512_bf16_supported") or "avx512_bf16" in flags:
        return True, "the CPU has avx512_bf16 (bf16 dot products)"
    return False, "the CPU has neither avx512_bf16 nor AMX: bf16 would be emulated, not faster"


def native_fp16(device: torch.device | str = "cpu") -> tuple[bool, str]:
    """(fp16 is computed natively here, why): CPUs with avx512_fp16 or AMX-FP16, CUDA GPUs of compute capability
    >= 7.0. Separate from bf16: an avx512_bf16 CPU (e.g. AMD Zen 4) still emulates fp16, ~5x slower than fp32."""
    verdict = _not_a_cpu_verdict(torch.device(device), "fp16", 7)
    if verdict is not None:
        return verdict
    flags = _cpu_flags()
    if _cpu_probe("_is_amx_fp16_supported") or "amx_fp16" in flags:
        return True, "the CPU has AMX-FP16"
    if "avx512_fp16" in flags:
        return True, "the CPU has avx512_fp16"
    return False, "the CPU has neither avx512_fp16 nor AMX-FP16: fp16 would be emulated, not faster"


def native_precision(precision: str, device: torch.device | str = "cpu") -> bool:
    """Whether ``precision`` (fp32 | bf16 | fp16) is computed natively on ``device``; fp32 always is."""
    checks = {"fp32": lambda d: (True, ""), "bf16": native_bf16, "fp16": native_fp16}
    if precision not in checks:
        raise ValueError(f"argument 'precision' is {precision!r}; expected one of {', '.join(checks)}")
    return checks[precision](device)[0]


def emulated_warning(flag: str, dtype: torch.dtype | None, device: torch.device | str) -> str | None:
    """A warning when ``flag`` makes a network run at a ``dtype`` that ``device`` only emulates (bf16 on a CPU
    without avx512_bf16 / AMX, fp16 on a GPU older than sm_70, ...): it is then several times slower than fp32
    (benchmarks/results/precision-cpu-epyc-2core.md). None where the dtype is fp32 or native."""
    name = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype)
    if name is None:
        return None
    native, why = {"bf16": native_bf16, "fp16": native_fp16}[name](device)
    if native:
        return None
    faster = "fp32" if flag != "--amp" else "fp16" if name == "bf16" and native_fp16(device)[0] else "off"
    return f"warning: {flag} {name} on {torch.device(device)}: {why}; expect it slower than fp32 (try {flag} {faster})"


def warn_if_emulated(flag: str, dtype: torch.dtype | None, device: torch.device | str) -> None:
    """Print :func:`emulated_warning`'s line on stderr, where there is one (the commands run as asked)."""
    warning = emulated_warning(flag, dtype, device)
    if warning:
        print(warning, file=sys.stderr)


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> torch.dtype | None:
    """The autocast dtype of the frozen denoiser for ``precision`` (fp32 | bf16 | fp16 | auto); None = fp32.
    auto = bf16 where :func:`native_bf16` says the hardware computes it natively, else fp32."""
    if precision == "auto":
        return torch.bfloat16 if native_bf16(device)[0] else None
    if precision not in PRECISION_DTYPES:
        raise ValueError(f"argument 'precision' is {precision!r}; expected one of {', '.join(PRECISIONS)}")
    return PRECISION_DTYPES[precision]


def auto_precision_info() -> dict:
    """What ``--denoiser-precision auto`` picks on each device here, and why; and whether an explicit fp16 would
    be native there (auto never picks it)."""
    devices = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    out = {}
    for name in devices:
        ok, why = native_bf16(name)
        fp16, fp16_why = native_fp16(name)
        out[name] = {"choice": "bf16" if ok else "fp32", "why": why, "fp16": "native" if fp16 else "emulated",
                     "fp16_why": fp16_why}
    return out


def build_info() -> dict:
    """Versions, and which backends are compiled and usable on this machine."""
    info = {
        "diffaug_fast": _build.package_version(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_threads": torch.get_num_threads(),
        "extension": {"loaded": _build.has_extension(), "error": _build.extension_error()},
        "backends": {name: {"usable": ok, "why": why} for name, (ok, why) in backend_status().items()},
        "denoiser_precision_auto": auto_precision_info(),
    }
    if _build.has_extension():
        ext = _build.extension()
        info["extension"].update({
            "path": ext.__file__,
            "with_cuda": bool(ext.with_cuda),
            "cuda_archs": ext.cuda_archs.split(",") if ext.cuda_archs else [],
            "cxx_compiler": ext.cxx_compiler,
            "cuda_compiler": ext.cuda_compiler.strip() or None,
        })
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception:
        info["triton"] = None
    return info


