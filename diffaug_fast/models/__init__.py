"""Classifiers: image classifiers (small ResNets, WRNs, torchvision by name) and classifiers of noisy images
(noisy: sees x_t; denoising-assisted: sees x_t and the denoiser's x0_hat)."""
from diffaug_fast.models.build import TIME_WIDTHS, build_model
from diffaug_fast.models.classifiers import build_classifier
from diffaug_fast.models.noisy import build_noisy_classifier

__all__ = ["TIME_WIDTHS", "build_classifier", "build_model", "build_noisy_classifier"]
