"""diffaug-fast: diffuse-and-denoise augmentation and denoising-assisted diffusion classifiers, fast."""
from diffaug_fast._build import ExtensionUnavailableError, build_info
from diffaug_fast import data, diffusion
from diffaug_fast.ops import BackendUnavailableError, available_backends, denoise_epilogue, diffuse, guided_step
from diffaug_fast.pretrained import pretrained

__all__ = ["BackendUnavailableError", "ExtensionUnavailableError", "available_backends", "build_info", "data", "diffusion",
           "denoise_epilogue", "diffuse", "guided_step", "pretrained"]
