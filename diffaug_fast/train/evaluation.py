"""The evaluation that ends a training run, and re-evaluating a finished run with new evaluation options
(``diffaug-fast train --evaluate-only``) without touching its training state."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from diffaug_fast.augment import FastNet
from diffaug_fast.config import TrainConfig, to_dict
from diffaug_fast.config.options import validate_options
from diffaug_fast.data import describe_split, select, stratified_subset, subset_summary
from diffaug_fast.errors import DiffAugError
from diffaug_fast.eval.metrics import accuracy, disagreement, evaluate, evaluate_noisy, noisy_accuracies
from diffaug_fast.runs import files
from diffaug_fast.runs.checkpoint import checkpoint_exists, load_verified
from diffaug_fast.devices import run_device
from diffaug_fast.runs.classifiers import load_classifier, run_config
from diffaug_fast.runs.weights import load_denoiser
from diffaug_fast.train.batches import denoised_per_batch
from diffaug_fast.train.checks import check_denoiser, check_ensemble_denoiser, check_same_run, needs_denoiser
from diffaug_fast.train.distributed import world
from diffaug_fast.train.step_data import evaluation_images, training_source, validation_images
from diffaug_fast.train.ssl import labeled_subset, pu_targets


def fast_net_for(config: TrainConfig, denoiser, device) -> FastNet | None:
    """The run's fused / compiled denoiser path (None without a denoiser)."""
    if denoiser is None:
        return None
    return FastNet(denoiser, compile=config.run.compile != "off", amp=config.run.amp, device=device,
                   precision=config.diffaug.denoiser_precision)


def ensemble_denoiser(config: TrainConfig, denoiser, image_shape, device):
    """The denoiser of the closing evaluation: a clean classifier's --de-denoiser when one is given (checked
    against the test images and --de-timesteps), else ``denoiser``, the run's own."""
    if config.eval.de_denoiser is None or config.model.mode != "clean" or not config.eval.de_timesteps:
        return denoiser
    other = load_denoiser(config.eval.de_denoiser, device, option="--de-denoiser")
    check_ensemble_denoiser(config, other, image_shape)
    return other


def evaluate_trained(config: TrainConfig, model, denoiser, test_images, test_labels, *, device, fast_net=None,
                     progress: bool = False, labeled=None, prior: float | None = None, val_data=None) -> dict:
    """Clean classifiers: clean / noisy-test accuracy with DiffAug-Ensemble on ``--eval-limit`` test images (a
    class-stratified subset, the same for every run: ``data.subsets``), clean and noisy accuracy (``--noise-draws``)
    on all of them. Noisy / DA classifiers: accuracy (PU: and F1) per t-bucket, and with --ssl / --pu the
    disagreement between nearby t. ``val_data``: (images, labels) of the validation split: the same cheap numbers
    on it (``validation_metrics``)."""
    subset = stratified_subset(test_labels, config.eval.limit)  # not a prefix: test sets are often class-sorted
    images, seed = select(test_images, subset), config.run.seed
    metrics = subset_summary(test_labels, subset)
    if fast_net is not None and torch.device(device).type == "cpu":
        # the training step's DiffAug batch: its compiled graph serves the evaluation too, at a cache-sized batch
        fast_net = fast_net.chunked(max(min(denoised_per_batch(config), config.optim.batch_size // world()[1]), 1))
    if config.model.mode == "clean":
        metrics.update(evaluate(model, denoiser, images, test_labels[subset], timesteps=config.eval.de_timesteps,
                                noise_std=config.eval.noise_std, seed=seed, fast_net=fast_net, device=device,
                                progress=progress))
        metrics["clean_acc_full_test"] = accuracy(model, test_images, test_labels, device=device)
        metrics.update(noisy_summary(model, test_images, test_labels, config, "full_test", device))
        if denoiser is not None and config.eval.de_timesteps:
            metrics["de_denoiser"] = config.eval.de_denoiser or config.diffaug.denoiser
        return {**metrics, **validation_metrics(config, model, denoiser, val_data, device)}
    labels = pu_targets(test_labels, config.semi.positive) if config.semi.pu else test_labels
    metrics.update(evaluate_noisy(model, denoiser, images, labels[subset], seed=seed, device=device,
                                  f1=config.semi.pu))
    metrics.update(validation_metrics(config, model, denoiser, val_data, device))
    if config.semi_supervised:
        metrics["tc_disagreement"] = disagreement(model, denoiser, images, radius=config.semi.tc_radius,
                                                  seed=seed, device=device)
        metrics["labeled_examples"] = len(labeled)
        if config.semi.pu:
            metrics["prior"] = prior
    return metrics


def noisy_summary(model, images, labels, config: TrainConfig, name: str, device) -> dict:
    """``noisy_acc_<name>``: the mean accuracy over ``--noise-draws`` Gaussian draws, each draw beside it."""
    draws = noisy_accuracies(model, images, labels, noise_std=config.eval.noise_std, draws=config.eval.noise_draws,
                             seed=config.run.seed, device=device)
    return {f"noisy_acc_{name}": sum(draws) / len(draws), f"noisy_acc_{name}_draws": draws}


def validation_metrics(config: TrainConfig, model, denoiser, val_data, device) -> dict:
    """What a run is chosen by: clean classifiers' clean and noisy accuracy on the whole validation split; noisy /
    DA classifiers' accuracy over t on ``--eval-limit`` of it. Empty without a validation split."""
    if val_data is None:
        return {}
    images, labels = val_data
    d = config.data
    metrics = {"val_images": len(labels), "val_split": describe_split(len(labels), d.split_seed)}
    if config.model.mode == "clean":
        metrics["clean_acc_val"] = accuracy(model, images, labels, device=device)
        return {**metrics, **noisy_summary(model, images, labels, config, "val", device)}
    subset = stratified_subset(labels, config.eval.limit)
    targets = pu_targets(labels, config.semi.positive) if config.semi.pu else labels
    per_t = evaluate_noisy(model, denoiser, select(images, subset), targets[subset], seed=config.run.seed,
                           device=device, f1=config.semi.pu)
    metrics["val_mean_acc_over_t"] = per_t["mean_acc_over_t"]
    if "mean_f1_over_t" in per_t:
        metrics["val_mean_f1_over_t"] = per_t["mean_f1_over_t"]
    return metrics


def evaluate_only(out_dir: str | Path, eval_options: dict, *, progress: bool = True) -> dict:
    """Evaluate the finished run in ``out_dir`` again with ``eval_options`` (the eval section's fields, e.g.
    ``{"limit": None, "de_timesteps": [0, 100]}``); writes metrics.json and the new settings to config.json."""
    out_dir = Path(out_dir)
    if not checkpoint_exists(out_dir / files.CHECKPOINT):
        raise FileNotFoundError(f"argument --out: {out_dir} holds no finished `diffaug-fast train` run to evaluate")
    config = run_config(out_dir)
    saved = load_verified(out_dir / files.CHECKPOINT)
    check_same_run(saved["config"], config, f"{out_dir / files.CHECKPOINT}", out_dir)
    train_labels = training_source(config).labels
    total = config.total_steps(len(train_labels))
    if saved["step"] < total:
        raise DiffAugError(f"{out_dir} stopped at step {saved['step']} of {total}; finish it with --resume first")
    for name, value in eval_options.items():
        setattr(config.eval, name, value)
    validate_options(config)
    device = run_device(config.run.device)
    denoiser = load_denoiser(config.diffaug.denoiser, device, config.diffaug.denoiser_flags) \
        if needs_denoiser(config, training=False) else None
    test_images, test_labels = evaluation_images(config)
    if denoiser is not None:
        check_denoiser(config, denoiser, test_images.shape[1:])
    model, _ = load_classifier(out_dir, device, denoiser=denoiser)
    denoiser = ensemble_denoiser(config, denoiser, test_images.shape[1:], device)
    labeled, prior = None, None
    if config.semi_supervised:
        classes = config.semi.positive if config.semi.pu else None
        labeled = labeled_subset(train_labels, config.semi.labels_per_class, config.run.seed, classes=classes)
        if config.semi.pu:
            prior = config.semi.prior if config.semi.prior is not None else \
                float(torch.isin(train_labels, torch.tensor(config.semi.positive)).float().mean())
    fast_net = fast_net_for(config, denoiser, device)
    start = time.perf_counter()
    metrics = evaluate_trained(config, model, denoiser, test_images, test_labels, device=device, fast_net=fast_net,
                               progress=progress, labeled=labeled, prior=prior, val_data=validation_images(config))
    metrics.update(step=saved["step"], eval_seconds=time.perf_counter() - start)
    before = files.read_json(out_dir / files.METRICS, {})
    # facts of the training, not of this evaluation: kept
    metrics.update({k: before[k] for k in ("denoiser_precision", "image_shape", "image_shape_from") if k in before})
    files.write_json(out_dir / files.METRICS, metrics)
    files.write_json(out_dir / files.CONFIG, to_dict(config))
    return metrics
