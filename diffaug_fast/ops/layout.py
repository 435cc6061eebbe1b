"""The positional contracts between Python and the kernels, as the kernels define them.

* ``PARAMETRIZATIONS``: what a denoiser predicts -> the code ``denoise_epilogue`` takes;
* ``STEP_MODES``: 'ddpm' / 'ddim' -> the code ``guided_step`` takes;
* ``DDIM_GUIDANCE``: how DDIM applies guidance -> the step-mode code of that variant: 'guided_diffusion'
  (the default, guided-diffusion's condition_score + ddim_sample, the code of 'ddim') or 'clip_after_shift';
* ``STEP_COLUMNS``: the columns of ``guided_step``'s per-example coefficient row, float32
  ``[B, STEP_COEFFICIENTS]`` (built by :func:`diffaug_fast.diffusion.step_coefficients`).

Their one definition is ``csrc/include/diffaug_fast/layout.h``; the compiled extension exports it and
this module reads it from there. Without the extension (a missing or broken build, where only the
reference backend runs) the values come from ``MIRROR``, a copy that python_tests/ops/test_layout.py
checks against the export. Everything else in Python (reference, Triton kernels, step_coefficients)
takes the codes and columns from here.
"""
from __future__ import annotations

from types import MappingProxyType

from diffaug_fast.ops import extension as _build

# Python mirror of csrc/include/diffaug_fast/layout.h, used only when diffaug_fast._C is not loaded.
MIRROR = MappingProxyType({
    "PARAMETRIZATIONS": MappingProxyType({"eps": 0, "v": 1, "x0": 2, "score": 3}),
    "STEP_MODES": MappingProxyType({"ddpm": 0, "ddim": 1}),
    "DDIM_GUIDANCE": MappingProxyType({"guided_diffusion": 1, "clip_after_shift": 2}),
    "STEP_COLUMNS": MappingProxyType({
        "a": 0, "s": 1,
        "ddpm_mean_x0": 2, "ddpm_mean_xt": 3, "ddpm_log_var_min": 4, "ddpm_log_var_max": 5, "ddpm_noise": 6,
        "ddim_a_prev": 2, "ddim_dir": 3, "ddim_sigma": 4,
    }),
    "STEP_COEFFICIENTS": 8,
})


def exported() -> dict | None:
    """The layout as the compiled extension exports it (None when diffaug_fast._C is not loaded, or is a
    build from before the export)."""
    if not _build.has_extension():
        return None
    ext = _build.extension()
    if not all(hasattr(ext, name) for name in MIRROR):
        return None
    return {"PARAMETRIZATIONS": dict(ext.PARAMETRIZATIONS), "STEP_MODES": dict(ext.STEP_MODES),
            "DDIM_GUIDANCE": dict(ext.DDIM_GUIDANCE),
            "STEP_COLUMNS": dict(ext.STEP_COLUMNS), "STEP_COEFFICIENTS": int(ext.STEP_COEFFICIENTS)}


_EXPORTED = exported()
SOURCE = "extension" if _EXPORTED is not None else "mirror"  # where the values below come from
_SOURCE = _EXPORTED if _EXPORTED is not None else MIRROR

PARAMETRIZATIONS: MappingProxyType = MappingProxyType(dict(_SOURCE["PARAMETRIZATIONS"]))
STEP_MODES: MappingProxyType = MappingProxyType(dict(_SOURCE["STEP_MODES"]))
DDIM_GUIDANCE: MappingProxyType = MappingProxyType(dict(_SOURCE["DDIM_GUIDANCE"]))
STEP_COLUMNS: MappingProxyType = MappingProxyType(dict(_SOURCE["STEP_COLUMNS"]))
STEP_COEFFICIENTS: int = int(_SOURCE["STEP_COEFFICIENTS"])

# Parametrization codes.
EPS, V, X0, SCORE = (PARAMETRIZATIONS[k] for k in ("eps", "v", "x0", "score"))
# Step-mode codes.
DDPM, DDIM = STEP_MODES["ddpm"], STEP_MODES["ddim"]
DDIM_CLIP_AFTER_SHIFT = DDIM_GUIDANCE["clip_after_shift"]  # DDIM with the older guidance order (step.h)
DDIM_CODES = frozenset(DDIM_GUIDANCE.values())  # every step-mode code that takes a DDIM step
# Coefficient columns: shared, then DDPM's, then DDIM's (see csrc/include/diffaug_fast/step.h for the formulas).
COL_A, COL_S = STEP_COLUMNS["a"], STEP_COLUMNS["s"]
COL_DDPM_MEAN_X0 = STEP_COLUMNS["ddpm_mean_x0"]
COL_DDPM_MEAN_XT = STEP_COLUMNS["ddpm_mean_xt"]
COL_DDPM_LOG_VAR_MIN = STEP_COLUMNS["ddpm_log_var_min"]
COL_DDPM_LOG_VAR_MAX = STEP_COLUMNS["ddpm_log_var_max"]
COL_DDPM_NOISE = STEP_COLUMNS["ddpm_noise"]
COL_DDIM_A_PREV = STEP_COLUMNS["ddim_a_prev"]
COL_DDIM_DIR = STEP_COLUMNS["ddim_dir"]
COL_DDIM_SIGMA = STEP_COLUMNS["ddim_sigma"]

del _EXPORTED, _SOURCE
