"""Fused ops. Each runs on one of four backends: reference, cpu, cuda, triton."""
from diffaug_fast.ops.backends import (BACKENDS, BackendUnavailableError, available_backends, backend_status,
                                       resolve_backend)
from diffaug_fast.ops.diffuse import diffuse
from diffaug_fast.ops.epilogue import denoise_epilogue
from diffaug_fast.ops.guided_step import guided_step
from diffaug_fast.ops.reference import PARAMETRIZATIONS

__all__ = ["BACKENDS", "BackendUnavailableError", "PARAMETRIZATIONS", "available_backends", "backend_status",
           "denoise_epilogue", "diffuse", "guided_step", "resolve_backend"]
