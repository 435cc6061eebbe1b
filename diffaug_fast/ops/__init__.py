"""Fused ops. Each runs on one of four backends: reference, cpu, cuda, triton."""
from diffaug_fast.ops.backends import (BACKENDS, BackendUnavailableError, available_backends, backend_status,
                                       resolve_backend)
from diffaug_fast.ops.diffuse import diffuse
from diffaug_fast.ops.epilogue import denoise_epilogue
from diffaug_fast.ops.fusion import concat_inputs, dual_fusion, gated_fusion
from diffaug_fast.ops.guided_step import guided_step
from diffaug_fast.ops.layout import PARAMETRIZATIONS

__all__ = ["BACKENDS", "BackendUnavailableError", "PARAMETRIZATIONS", "available_backends", "backend_status",
           "concat_inputs", "denoise_epilogue", "diffuse", "dual_fusion", "gated_fusion", "guided_step",
           "resolve_backend"]
