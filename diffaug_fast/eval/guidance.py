"""Samples from a denoiser, optionally guided by a trained noisy / DA classifier (``diffaug-fast sample``): the
run folders are resolved to models here, the sampler itself lives in diffusion/sampling.py."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from diffaug_fast.augment import PrecisionNet
from diffaug_fast.errors import DiffAugError
from diffaug_fast.ops.backends import resolve_precision
from diffaug_fast.ops.compiling import repair_inductor_cache
from diffaug_fast.runs.classifiers import classifier_classes, load_classifier
from diffaug_fast.runs.provenance import denoiser_data, same_denoiser
from diffaug_fast.runs.weights import load_denoiser


def class_labels(spec: str, names: list[str], num: int) -> torch.Tensor:
    """``--class``: an index, a class name, or ``all`` (the classes in turn, equally often)."""
    if spec == "all":
        return torch.arange(num) % len(names)
    if spec in names:
        return torch.full((num,), names.index(spec), dtype=torch.long)
    try:
        k = int(spec)
    except ValueError:
        k = -1
    if not 0 <= k < len(names):
        raise DiffAugError(f"argument --class {spec!r}: expected 'all', an index 0..{len(names) - 1} or a class "
                           f"name ({', '.join(names)})")
    return torch.full((num,), k, dtype=torch.long)


def sample_command(o) -> dict:
    """Sample ``o.num`` images (PNG grid + .npz in ``o.out``); with ``o.classifier``, classifier-guided toward
    ``o.class_``. Without ``--model`` a guided run samples with the denoiser its classifier was trained on."""
    import numpy as np
    from torchvision.utils import save_image

    from diffaug_fast.diffusion.sampling import chain_guidance, classifier_guidance, eps_model, sample

    guidance, labels, model_name, model_flags = None, None, o.model, o.denoiser_flags
    if o.classifier:
        if o.class_ is None:
            raise DiffAugError("argument --classifier needs --class (an index, a class name, or 'all')")
        classifier, cfg = load_classifier(o.classifier)
        if cfg.model.mode == "clean":
            raise DiffAugError(f"argument --classifier {o.classifier}: a clean-image classifier cannot guide "
                               "sampling; train one with `diffaug-fast train --mode noisy` or `--mode da`")
        trained_with, trained_flags = cfg.diffaug.denoiser, cfg.diffaug.denoiser_flags
        model_name = trained_with if o.model is None else o.model
        if o.model is None:
            model_flags = trained_flags
        if not same_denoiser(model_name, trained_with):  # by content: any spelling of the same file
            raise DiffAugError(f"argument --classifier {o.classifier} was trained with the {trained_with!r} "
                               f"diffusion model; sample with --model {trained_with} (or leave --model out)")
        if (model_flags or None) != (trained_flags or None):
            raise DiffAugError(f"argument --denoiser-flags: --classifier {o.classifier} was trained with "
                               f"--denoiser-flags {trained_flags!r}; give the same (or leave --model out)")
        labels = class_labels(o.class_, classifier_classes(o.classifier, classifier.net.fc.out_features), o.num)
    elif o.class_ is not None:
        raise DiffAugError("argument --class needs --classifier (a `train --mode noisy|da` run that guides the "
                           "sampler)")
    denoiser = load_denoiser(model_name or "fmnist", flags=model_flags, option="--model")
    shape = denoiser.image_shape or (1, 28, 28)
    if o.compile:
        repair_inductor_cache()
        denoiser.net = torch.compile(denoiser.net)
    dtype = resolve_precision(getattr(o, "denoiser_precision", "fp32"), next(denoiser.parameters()).device)
    if dtype is not None:
        denoiser.net = PrecisionNet(denoiser.net, dtype)
    model, chain = eps_model(denoiser)
    if labels is not None:
        index = denoiser.schedule.timesteps  # the classifier takes grid indices, the sampler passes timesteps
        # the classifier sees the denoiser's own x_t (a VE one's x_ve, not the VP chain's x_vp = a*x_ve), and the
        # gradient is taken with respect to the chain's x (chain_guidance)
        guidance = chain_guidance(denoiser, classifier_guidance(
            lambda x, t: classifier(x, torch.searchsorted(index, t)), labels))
    out = Path(o.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    learned = denoiser.learn_sigma and denoiser.parametrization == "eps"  # eps_model passes the 2C output on
    images = sample(model, (o.num, *shape), chain, steps=o.steps, mode=o.mode, eta=o.eta, seed=o.seed,
                    guidance=guidance, scale=o.scale, progress=True, learn_sigma=learned,
                    variance="learned" if learned else "fixed_small", ddim_guidance=o.ddim_guidance)
    seconds = time.perf_counter() - start
    nrow = int(labels.max()) + 1 if o.class_ == "all" else int(o.num**0.5 + 0.5)  # --class all: a column per class
    save_image(images.add(1).div(2).clamp(0, 1), out / "samples.png", nrow=nrow, padding=1)
    extra = {"labels": labels.numpy()} if labels is not None else {}
    # what the samples imitate, for `fidelity`'s default reference: the guiding run's data, else the denoiser's
    data = cfg.data.source if o.classifier else denoiser_data(model_name or "fmnist")
    if data is not None:
        extra["data"] = np.array(data)
    np.savez_compressed(out / "samples.npz",
                        images=((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy(), **extra)
    print(f"{o.num} samples ({o.mode}, {o.steps}, seed {o.seed}) in {seconds:.1f} s ({o.num / seconds:.1f} "
          f"images/s): {out / 'samples.png'}, {out / 'samples.npz'}")
    return {"images": images, "labels": labels}
