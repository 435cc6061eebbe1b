"""diffaug-fast: diffuse-and-denoise augmentation and denoising-assisted diffusion classifiers, fast.

The public API in a few names (see docs/architecture.md for the layers beneath):

* ``DiffAug``, ``DiffAugEnsemble``: the augmentation and its test-time ensemble;
* ``sample``: DDPM / DDIM sampling, optionally classifier-guided;
* ``pretrained``: the denoisers shipped with the package;
* the fused ops ``diffuse``, ``denoise_epilogue``, ``guided_step``, ``dual_fusion``.
"""
from diffaug_fast import data, diffusion
from diffaug_fast.augment import DiffAug, DiffAugEnsemble
from diffaug_fast.diffusion.sampling import sample
from diffaug_fast.errors import DiffAugError
from diffaug_fast.ops import (BackendUnavailableError, available_backends, denoise_epilogue, diffuse, dual_fusion,
                              guided_step)
from diffaug_fast.ops.backends import build_info
from diffaug_fast.ops.extension import ExtensionUnavailableError
from diffaug_fast.runs.weights import pretrained

__all__ = ["BackendUnavailableError", "DiffAug", "DiffAugEnsemble", "DiffAugError", "ExtensionUnavailableError",
           "available_backends", "build_info", "data", "denoise_epilogue", "diffuse", "diffusion", "dual_fusion",
           "guided_step", "pretrained", "sample"]
