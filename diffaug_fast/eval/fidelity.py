"""FID / IS / KID of generated Fashion-MNIST images with torch-fidelity and our own feature extractor.

Inception weights cannot be downloaded on every machine, and Inception features of 28x28 grayscale
clothing are a poor yardstick anyway. So a clean classifier — the one shipped with the package
(``"fmnist-classifier"``, the default), a ``diffaug-fast train`` run folder (or its ``checkpoint.pt``), or an
``export-classifier`` file — is registered with torch-fidelity as the feature extractor ``"diffaug-fast-classifier"``: its pooled penultimate features feed FID / KID /
precision-recall, its logits feed the Inception Score. Numbers made with it are comparable only with
numbers made with the same extractor run (say which one when you report them).

Which extractor fits which data: the shipped Fashion-MNIST classifier only for 1x28x28 Fashion-MNIST-like
samples (it knows nothing of other images); for anything else torch-fidelity's Inception-v3 (``inception``, the
usual FID / IS / KID of the literature; its weights file must be in torch's hub cache or given as
``inception:FILE``), or a clean classifier trained on the same images (``diffaug-fast train --data DIR``), whose
channels and image size must be the samples'. The reference is the test split of the data the samples imitate
(recorded by ``sample``), never Fashion-MNIST for other images.

Below the sample sizes where the numbers mean anything (:mod:`diffaug_fast.eval.fidelity_sample_size`) the
command still prints them, then one ``warning:`` line each, also written to the JSON's ``"warnings"``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from diffaug_fast.data.views import to_uint8, to_unit_range
from diffaug_fast.eval.fidelity_sample_size import isc_splits, kid_subset, sample_size_warnings

EXTRACTOR = "diffaug-fast-classifier"


def _extractor_class():
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    class ClassifierFeatures(FeatureExtractorBase):
        """uint8 images [B, 1 or 3, H, W] -> ("features" [B, D], "logits_unbiased" [B, K], "logits")."""

        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__(name, features_list)
            if feature_extractor_weights_path is None:
                raise ValueError(f"the {EXTRACTOR} feature extractor needs feature_extractor_weights_path: "
                                 "'fmnist-classifier', a `diffaug-fast train` run folder or an exported classifier")
            from diffaug_fast.runs.classifiers import load_classifier

            path = Path(feature_extractor_weights_path)
            model, config = load_classifier(path.parent if path.name == "checkpoint.pt" else path)
            if config.model.mode != "clean" or not hasattr(model, "features"):
                raise ValueError(f"{path}: the feature extractor must be a clean-image ResNet classifier "
                                 f"(mode {config.model.mode}, model {config.model.arch})")
            self.model, self.channels = model, config.data.channels

        @staticmethod
        def get_provided_features_list():
            return "features", "logits_unbiased", "logits"

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return {"isc": "logits_unbiased", "fid": "features", "kid": "features", "prc": "features"}[metric]

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 1, 28, 28, dtype=torch.uint8)

        def forward(self, x):
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise ValueError(f"{EXTRACTOR}: expected uint8 images [B, C, H, W], got {x.dtype} {list(x.shape)}")
            x = to_unit_range(x)
            if x.shape[1] == 3 and self.channels == 1:  # torch-fidelity's own datasets are RGB: back to grayscale
                x = x.mean(1, keepdim=True)
            elif x.shape[1] == 1 and self.channels == 3:
                x = x.expand(-1, 3, -1, -1)
            feats = self.model.features(x)
            logits = self.model.fc(feats)
            out = {"features": feats, "logits_unbiased": logits, "logits": logits}
            return tuple(out[name] for name in self.features_list)

    return ClassifierFeatures


def register() -> str:
    """Register the extractor with torch-fidelity (idempotent); returns its name."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if EXTRACTOR not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(EXTRACTOR, _extractor_class())
    return EXTRACTOR


class ImageTensorDataset(Dataset):
    """uint8 images [N, C, H, W] (or float in [-1, 1], converted) as the Dataset torch-fidelity reads."""

    def __init__(self, images: torch.Tensor, rgb: bool = False):
        if rgb and images.shape[1] == 1:  # Inception reads RGB
            images = images.expand(-1, 3, -1, -1)
        images = to_uint8(images)
        if images.dim() != 4:
            raise ValueError(f"images must be [N, C, H, W], got shape {list(images.shape)}")
        self.images = images.cpu()

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


def _extractor_name_and_weights(extractor_run: str | Path) -> tuple[str, str | None, bool]:
    """torch-fidelity's registry name, its weights path, and whether it reads RGB (Inception)."""
    if str(extractor_run).split(":")[0] == "inception":
        return "inception-v3-compat", str(extractor_run).partition(":")[2] or None, True
    return register(), str(extractor_run), False


def feature_layer(extractor_run: str | Path, metric: str) -> str:
    """The layer torch-fidelity's ``metric`` ("isc", "fid", "kid") reads from this extractor."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    return FEATURE_EXTRACTORS_REGISTRY[_extractor_name_and_weights(extractor_run)[0]].get_default_feature_layer_for_metric(metric)


def extract_features(images: torch.Tensor, extractor_run: str | Path, metrics: tuple[str, ...] = ("fid",), *,
                     batch_size: int = 500, verbose: bool = False, device=None) -> dict[str, torch.Tensor]:
    """One pass of ``images`` (uint8 or [-1, 1] floats) through torch-fidelity's extraction loop, keeping the
    layers the given metrics ("isc", "fid", "kid") read: {layer name: float32 [N, D]}. The extractor runs on
    ``device`` (default: the GPU when there is one, torch-fidelity's choice)."""
    import contextlib

    from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

    name, weights, rgb = _extractor_name_and_weights(extractor_run)
    layers = sorted({feature_layer(extractor_run, m) for m in metrics})
    cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    # torch-fidelity puts the extractor on the current GPU: make that the one asked for
    with torch.cuda.device(torch.device(device)) if cuda and device is not None else contextlib.nullcontext():
        extractor = create_feature_extractor(name, layers, cuda=cuda, feature_extractor_weights_path=weights,
                                             verbose=verbose)
        return get_featuresdict_from_dataset(ImageTensorDataset(images, rgb), extractor, batch_size, cuda,
                                             save_cpu_ram=True, verbose=verbose)


def metrics_from_features(generated: dict[str, torch.Tensor], reference: dict[str, torch.Tensor] | None,
                          extractor_run: str | Path, *, fid: bool = True, isc: bool = True, kid: bool = True,
                          kid_subset_size: int | None = None) -> dict:
    """torch-fidelity's own FID / IS / KID arithmetic on features from :func:`extract_features`, with the settings
    ``torch_fidelity.calculate_metrics`` gets from :func:`fidelity_metrics` (no shuffling, fixed seeds)."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    def layer(metric):
        return feature_layer(extractor_run, metric)

    result = {}
    if isc:
        n = len(generated[layer("isc")])
        result.update(isc_features_to_metric(generated[layer("isc")], splits=isc_splits(n), shuffle=False))
    if fid:
        result.update(fid_statistics_to_metric(fid_features_to_statistics(generated[layer("fid")]),
                                               fid_features_to_statistics(reference[layer("fid")]), verbose=False))
    if kid:
        g, r = generated[layer("kid")], reference[layer("kid")]
        result.update(kid_features_to_metric(g, r, kid_subset_size=kid_subset_size or kid_subset(len(g), len(r)),
                                             verbose=False))
    return result


def fidelity_metrics(generated: torch.Tensor, reference: torch.Tensor, extractor_run: str | Path, *,
                     fid: bool = True, isc: bool = True, kid: bool = True, kid_subset_size: int | None = None,
                     batch_size: int = 500, verbose: bool = False) -> dict:
    """torch-fidelity's FID / IS / KID of ``generated`` against ``reference`` with a classifier run's features, or
    Inception-v3's for ``extractor_run`` = ``inception`` / ``inception:FILE``; each set goes through the
    extractor once."""
    wanted = tuple(m for m, on in (("isc", isc), ("fid", fid), ("kid", kid)) if on)
    if not wanted:
        raise ValueError("fidelity_metrics: at least one of fid, isc, kid must be True")
    f_gen = extract_features(generated, extractor_run, wanted, batch_size=batch_size, verbose=verbose)
    f_ref = (extract_features(reference, extractor_run, tuple(m for m in wanted if m != "isc"), batch_size=batch_size,
                              verbose=verbose) if fid or kid else None)
    return metrics_from_features(f_gen, f_ref, extractor_run, fid=fid, isc=isc, kid=kid,
                                 kid_subset_size=kid_subset_size)


def features(images: torch.Tensor, extractor_run: str | Path, batch: int = 500) -> np.ndarray:
    """The features FID / KID use, float64 [N, D], for images (uint8 or [-1, 1] floats): a classifier run's
    pooled "features", or for ``inception`` / ``inception:FILE`` torch-fidelity's Inception-v3 pool features."""
    return extract_features(images, extractor_run, ("fid",), batch_size=batch)[feature_layer(extractor_run, "fid")] \
        .double().numpy()


def check_extractor(name: str, shape: tuple, *, auto: bool = False, flag: str = "--extractor") -> None:
    """The feature extractor (or judge) ``name`` fits samples of ``shape`` (C, H, W); a one-line error if not."""
    from diffaug_fast.errors import DiffAugError
    from diffaug_fast.runs.classifiers import classifier_weights

    size = "x".join(map(str, shape))
    if name.split(":")[0] == "inception" and flag == "--extractor":
        file = name.partition(":")[2]
        if file and not Path(file).is_file():
            raise FileNotFoundError(f"argument --extractor {name}: {file} is not a file (torch-fidelity's "
                                    "Inception-v3 weights, weights-inception-2015-12-05-6726825d.pth)")
        if auto and not file:
            from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

            cached = Path(torch.hub.get_dir()) / "checkpoints" / URL_INCEPTION_V3.rsplit("/", 1)[-1]
            if not cached.exists():
                raise DiffAugError(f"the fidelity of {size} samples needs features of such images: torch-fidelity's "
                                   f"Inception-v3, whose weights {cached.name} are not in {cached.parent}; put them "
                                   "there, pass --extractor inception:FILE, or --extractor a clean classifier of these "
                                   "images (a `diffaug-fast train --data DIR` run)")
        return
    _, config, _ = classifier_weights(name)
    fits = (config.data.channels, config.data.image_size, config.data.image_size)
    if config.model.mode != "clean" or fits != tuple(shape):
        raise DiffAugError(f"argument {flag} {name} is a {config.model.mode} classifier of {'x'.join(map(str, fits))} "
                           f"images; the samples are {size}: pass a clean classifier trained on images like them"
                           + (" (or --extractor inception)" if flag == "--extractor" else ""))


def samples_npz(path) -> np.lib.npyio.NpzFile:
    """The arrays of a samples.npz; anything else (a text file, a lone .npy, a pickle) is one line saying what was
    expected, not numpy's advice about pickles."""
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError):
        data = None
    if not isinstance(data, np.lib.npyio.NpzFile) or "images" not in data:
        raise ValueError(f"argument --samples: {path} is not a .npz of samples (expected the samples.npz "
                         "`diffaug-fast sample` writes)")
    return data


def fidelity_command(o) -> dict:
    """``diffaug-fast fidelity``: FID / IS / KID of a samples.npz against real test images, and with labels in
    it the judge classifier's accuracy on the requested classes."""
    import json
    from pathlib import Path

    from diffaug_fast.data import eval_subset, source_images
    from diffaug_fast.data.subsets import SUBSET_RULE
    from diffaug_fast.devices import run_device
    from diffaug_fast.errors import DiffAugError
    from diffaug_fast.eval.metrics import accuracy
    from diffaug_fast.runs.classifiers import load_classifier

    device = run_device(o.device)  # an impossible --device fails before anything loads
    path = Path(o.samples)
    if not path.exists():
        raise FileNotFoundError(f"argument --samples: {path} does not exist (write one with `diffaug-fast sample`)")
    data = samples_npz(path)
    generated = torch.from_numpy(data["images"])
    from diffaug_fast.data.cifar import cifar_source

    shape = tuple(generated.shape[1:])
    reference_name = o.reference or (str(data["data"]) if "data" in data else "fmnist")
    if reference_name != "fmnist" and cifar_source(reference_name) is None and not Path(reference_name).is_dir():
        raise FileNotFoundError(f"argument --reference {reference_name}: expected 'fmnist', cifar10:DIR / "
                                "cifar100:DIR or an image folder" + ("" if o.reference else
                                                                    f" (recorded in {path}; pass --reference)"))
    source, subset = eval_subset(reference_name, "test", o.reference_limit)  # class-stratified, not a prefix
    reference, _ = source_images(source, image_size=shape[-1], channels=shape[0], decode=True)
    if tuple(reference.shape[1:]) != shape:
        raise DiffAugError(f"argument --reference {reference_name}: its images are "
                           f"{'x'.join(map(str, reference.shape[1:]))}, the samples {'x'.join(map(str, shape))}; "
                           "compare with the data the samples imitate")
    extractor = o.extractor or ("fmnist-classifier" if shape == (1, 28, 28) else "inception")
    check_extractor(extractor, shape, auto=o.extractor is None)
    # each set through the extractor once: the point estimates and the bootstrap read the same features
    f_gen = extract_features(generated, extractor, ("isc", "fid", "kid"), device=device)
    f_ref = extract_features(reference, extractor, ("fid", "kid"), device=device)
    result = metrics_from_features(f_gen, f_ref, extractor)
    warnings = sample_size_warnings(len(generated), len(reference), f_gen[feature_layer(extractor, "fid")].shape[1],
                                    extractor)
    which = f" ({subset['eval_subset']})" if subset["eval_subset"].startswith(SUBSET_RULE) else ""
    line = (f"{len(generated)} samples vs {len(reference)} test images of {reference_name}{which}, features of "
            f"{extractor}: "
            f"FID {result['frechet_inception_distance']:.3f}, IS {result['inception_score_mean']:.3f} ± "
            f"{result['inception_score_std']:.3f}, KID {result['kernel_inception_distance_mean']:.5f}")
    if o.bootstrap:
        from diffaug_fast.eval.fidelity_bootstrap import bootstrap_fid_kid

        if len(generated) < 3:
            raise DiffAugError(f"argument --bootstrap: {len(generated)} samples are too few to redraw; pass "
                               "--bootstrap 0 or sample more")
        layer = feature_layer(extractor, "fid")
        interval = bootstrap_fid_kid(f_gen[layer].double().numpy(), f_ref[layer].double().numpy(),
                                     resamples=o.bootstrap)
        result.update({"frechet_inception_distance_low": interval["fid_low"],
                       "frechet_inception_distance_high": interval["fid_high"],
                       "kernel_inception_distance_low": interval["kid_low"],
                       "kernel_inception_distance_high": interval["kid_high"],
                       "bootstrap_resamples": o.bootstrap})
        line += (f" (95% bootstrap intervals over {o.bootstrap} redraws: FID {interval['fid_low']:.3f}–"
                 f"{interval['fid_high']:.3f}, KID {interval['kid_low']:.5f}–{interval['kid_high']:.5f})")
    judge_name = o.judge or (None if extractor.split(":")[0] == "inception" else extractor)
    if "labels" in data and judge_name is None:
        line += "; no judge of the requested class (pass --judge, a clean classifier of these images)"
    elif "labels" in data:
        check_extractor(judge_name, shape, flag="--judge")
        judge, _ = load_classifier(judge_name, device)
        acc = accuracy(judge, to_unit_range(generated), torch.from_numpy(data["labels"]), device=device)
        result["judge_accuracy"] = acc
        line += f"; judge accuracy on the requested class {100 * acc:.1f}%"
    print(line)
    for warning in warnings:
        print(f"warning: {warning}")
    if o.json:
        numbers = {k: float(v) for k, v in result.items()}
        Path(o.json).parent.mkdir(parents=True, exist_ok=True)  # e.g. a study evaluation's own folder
        Path(o.json).write_text(json.dumps({**numbers, "warnings": warnings}, indent=2))
    return {**result, "warnings": warnings}
