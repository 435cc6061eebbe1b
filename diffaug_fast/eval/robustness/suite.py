"""``diffaug-fast eval``: corruptions, OOD detection and certified accuracy of a trained clean classifier,
with and without DiffAug-Ensemble. Results go to ``eval.json`` / ``eval.md`` / plots in the output folder;
every finished item is saved at once to ``eval.partial.json``, so an interrupted evaluation resumes.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from scipy.stats import norm
from tqdm.auto import tqdm

from diffaug_fast.config import RobustnessConfig
from diffaug_fast.config.options import validate_options
from diffaug_fast.data.subsets import SUBSET_RULE, stratified_subset
from diffaug_fast.devices import OnDevice
from diffaug_fast.eval.robustness.certify import RADII, certified_accuracy, certify, denoised_classifier
from diffaug_fast.eval.robustness.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from diffaug_fast.eval.robustness.ood import (OOD_SETS, detection_metrics, energy, ensemble_scores, msp, ood_images,
                                              ood_label)
from diffaug_fast.ops.backends import resolve_precision, warn_if_emulated
from diffaug_fast.runs import files

EvalConfig = RobustnessConfig  # the name of earlier versions


class _Partial:
    """Finished items, saved atomically after each one; a rerun with the same settings skips them."""

    def __init__(self, path: Path, config: EvalConfig):
        # the subset rule is part of the key: items scored on another choice of images are not reused
        self.path, self.key = path, json.dumps({**asdict(config), "eval_subset": SUBSET_RULE}, sort_keys=True)
        saved = json.loads(path.read_text()) if path.exists() else {}
        self.items = saved.get("items", {}) if saved.get("config") == self.key else {}

    def get(self, name):
        return self.items.get(name)

    def put(self, name, value):
        self.items[name] = value
        files.write_text_atomic(self.path, json.dumps({"config": self.key, "items": self.items}))
        return value


def _predict(model, images, batch=500):
    with torch.inference_mode():
        return torch.cat([model(images[i:i + batch]).float() for i in range(0, len(images), batch)])


def _load_corruption_folder(root: Path, limit: int):
    """CIFAR-10-C layout: ``labels.npy`` and one ``<corruption>.npy`` per corruption, 5 severities stacked; of each
    severity the class-stratified subset of ``limit`` images (the same images at every severity)."""
    labels = torch.from_numpy(np.load(root / "labels.npy")).long()
    per = len(labels) // 5
    chosen = stratified_subset(labels[:per], limit).numpy()
    for path in sorted(root.glob("*.npy")):
        if path.name == "labels.npy":
            continue
        data = np.load(path, mmap_mode="r")
        if data.shape[0] != len(labels):
            raise ValueError(f"{path}: {data.shape[0]} images but labels.npy has {len(labels)}")
        for severity in SEVERITIES:
            rows = (severity - 1) * per + chosen
            x = torch.from_numpy(np.asarray(data[rows])).float()  # a memory map reads only these rows
            x = x.permute(0, 3, 1, 2) if x.dim() == 4 and x.shape[-1] in (1, 3) else x.unsqueeze(1)
            yield path.stem, severity, x.div(127.5).sub(1), labels[torch.from_numpy(rows)]


def run_corruptions(classifier, ensemble, images, labels, config, partial, progress):
    items = ([(n, s, None, None) for n in CORRUPTIONS for s in SEVERITIES] if config.corruption_data is None
             else list(_load_corruption_folder(Path(config.corruption_data), config.limit)))
    table = {}
    for name, severity, x, y in tqdm(items, desc="corruptions", disable=not progress):
        key = f"corruption/{name}/{severity}"
        result = partial.get(key)
        if result is None:
            if x is None:
                x, y = corrupt(images, name, severity, seed=config.seed), labels
            result = {"acc": float((_predict(classifier, x).argmax(1) == y).float().mean())}
            if ensemble is not None:
                result["de_acc"] = float((ensemble(x).argmax(1) == y).float().mean())
            partial.put(key, result)
        table.setdefault(name, {})[str(severity)] = result
    return corruption_summary(table)


def corruption_summary(table: dict) -> dict:
    """eval.json's ``corruptions``: the per-corruption, per-severity accuracies (``table``: name -> severity ->
    {"acc"[, "de_acc"]}) and, for plain accuracy and DiffAug-Ensemble's, the numbers a study reads as plain keys:
    ``mean_<m>`` (over every corruption and severity), ``<m>_per_severity`` (over corruptions, severity 1..5),
    ``mean_<m>_per_corruption`` (over severities) and the worst corruption by that mean, ``worst_<m>_corruption``
    and ``worst_mean_<m>`` (e.g. ``worst_mean_acc``)."""
    summary = {"per_corruption": table}
    for metric in ("acc", "de_acc"):
        values = [r[metric] for sev in table.values() for r in sev.values() if metric in r]
        if values:
            summary[f"mean_{metric}"] = float(np.mean(values))
            summary[f"{metric}_per_severity"] = [float(np.mean([table[n][str(s)][metric] for n in table]))
                                                 for s in SEVERITIES]
            per_corruption = {name: float(np.mean([r[metric] for r in sev.values()])) for name, sev in table.items()}
            worst = min(per_corruption, key=per_corruption.get)
            summary[f"mean_{metric}_per_corruption"] = per_corruption
            summary[f"worst_{metric}_corruption"] = worst
            summary[f"worst_mean_{metric}"] = per_corruption[worst]
    return summary


def corruption_error(result: dict, baseline: dict, metric: str = "acc") -> dict:
    """CE per corruption (sum of errors over severities, relative to the baseline's) and their mean, mCE."""
    ce = {}
    for name, per_sev in result["per_corruption"].items():
        base = baseline["per_corruption"].get(name)
        if base is None:
            continue
        err = sum(1 - per_sev[s][metric] for s in per_sev)
        base_err = sum(1 - base[s]["acc"] for s in per_sev)
        ce[name] = err / base_err if base_err > 0 else float("nan")
    return {"ce": ce, "mce": float(np.mean(list(ce.values()))) if ce else float("nan")}


def run_ood(classifier, ensemble, images, config, partial, progress):
    def scores(x, tag):
        cached = partial.get(f"ood-scores/{tag}")
        if cached is not None:
            return {k: torch.tensor(v) for k, v in cached.items()}
        logits = _predict(classifier, x)
        out = {"msp": msp(logits), "energy": energy(logits)}
        if ensemble is not None:
            out.update(ensemble_scores(ensemble.logits_per_t(x)))
        partial.put(f"ood-scores/{tag}", {k: v.tolist() for k, v in out.items()})
        return out

    inside = scores(images, "in-distribution")
    results = {}
    for name in tqdm(config.ood_sets, desc="OOD sets", disable=not progress):
        x = ood_images(name, n=config.limit, image_size=images.shape[-1], channels=images.shape[1], seed=config.seed)
        outside = scores(x, name)
        results[Path(name).name if name not in OOD_SETS else name] = {
            score: detection_metrics(inside[score], outside[score]) for score in inside}
    return results


CERTIFY_PIECE = 10  # images certified between two saves: an interrupted run loses at most this many


def run_certify(classifier, denoiser, images, labels, config, partial, progress):
    """Per σ: certify ``images`` (``evaluate_run`` passes the class-stratified subset of ``certify_limit``) piece by
    piece (each piece saved as it finishes, so a long certification resumes where it stopped), then certified
    accuracy at each radius."""
    results = {}
    for sigma in config.sigmas:
        key = f"certify/{sigma}"
        result = partial.get(key)
        if result is None:
            base = denoised_classifier(classifier, denoiser, sigma)
            preds, radii = [], []
            bar = tqdm(total=len(images), desc=f"certify σ={sigma}", disable=not progress, unit="img")
            for start in range(0, len(images), CERTIFY_PIECE):
                piece = partial.get(f"{key}/images-from-{start}")
                if piece is None:
                    p, r = certify(base, images[start:start + CERTIFY_PIECE], sigma=sigma,
                                   num_classes=int(labels.max()) + 1, n0=config.n0, n=config.n, alpha=config.alpha,
                                   seed=config.seed, first_index=start)
                    piece = partial.put(f"{key}/images-from-{start}", {"preds": p.tolist(), "radii": r.tolist()})
                preds += piece["preds"]
                radii += piece["radii"]
                bar.update(len(piece["preds"]))
            bar.close()
            preds, radii = torch.tensor(preds), torch.tensor(radii)
            result = partial.put(key, {"timestep": base.timestep, "abstain": float((preds == -1).float().mean()),
                                       "certified_acc": {str(r): certified_accuracy(preds, radii, labels, r)
                                                         for r in RADII},
                                       "max_radius_possible": sigma * float(norm.ppf(config.alpha ** (1 / config.n))),
                                       "images": len(labels)})
        results[str(sigma)] = result
    return results


def eval_folder(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Where an evaluation writes: --out, else the run folder (or, for an exported classifier file, a folder named
    after it)."""
    if out_dir:
        return Path(out_dir)
    return Path(run_dir) if Path(run_dir).is_dir() else Path(run_dir).with_suffix("")


def finished_items(out: Path, config: EvalConfig) -> int:
    """How many finished items an evaluation in ``out`` with these settings keeps for its rerun."""
    return len(_Partial(out / files.EVAL_PARTIAL, config).items)


def evaluate_run(run_dir: str | Path, config: EvalConfig, *, out_dir: str | Path | None = None,
                 baseline: str | Path | None = None, progress: bool = True, device: str = "cpu") -> dict:
    """Run the suites on a clean-classifier run folder (or exported classifier); write eval.json / .md / plots. The
    images are made and scored on the CPU; the networks run on ``device`` (``run_device``'s answer to --device)."""
    from diffaug_fast.augment import DiffAugEnsemble
    from diffaug_fast.data import eval_subset, source_images
    from diffaug_fast.runs.classifiers import load_classifier
    from diffaug_fast.runs.weights import check_denoiser_serves, load_denoiser

    validate_options(config)
    config.validate()
    base_eval = Path(baseline) / files.EVAL if baseline else None
    # --baseline naming this evaluation's own output folder: the run is its own reference (mCE 100 by definition),
    # so a study can give every variant the same --baseline, the baseline's run included
    own = base_eval is not None and Path(baseline).resolve() == eval_folder(run_dir, out_dir).resolve()
    if base_eval is not None and not base_eval.exists() and not own:
        raise FileNotFoundError(f"--baseline {baseline}: no eval.json there; evaluate the baseline first")
    device = torch.device(device)
    classifier, train_config = load_classifier(run_dir, device)
    if train_config.model.mode != "clean":
        raise ValueError(f"{run_dir}: `diffaug-fast eval` evaluates clean-image classifiers; this run is a "
                         f"{train_config.model.mode} classifier of (x_t, t)")
    out = eval_folder(run_dir, out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config.denoiser is None:
        denoiser = load_denoiser(train_config.diffaug.denoiser, device, flags=train_config.diffaug.denoiser_flags)
    else:
        denoiser = load_denoiser(config.denoiser, device, option="--denoiser")
    shape = {"image_size": train_config.data.image_size, "channels": train_config.data.channels, "decode": True}
    source, subset = eval_subset(train_config.data.source, "test", config.limit)  # class-stratified, not a prefix
    x, y = source_images(source, **shape)
    check_denoiser_serves(denoiser, x.shape[1:], config.de_timesteps if config.de else [], option="--denoiser",
                          name=config.denoiser or train_config.diffaug.denoiser)
    if config.de:
        warn_if_emulated("--denoiser-precision", resolve_precision(config.denoiser_precision, device), device)
    ensemble = (OnDevice(DiffAugEnsemble(classifier, denoiser, config.de_timesteps, seed=config.seed, compile=False,
                                         precision=config.denoiser_precision), device)
                if config.de else None)
    classifier = OnDevice(classifier, device)
    partial = _Partial(out / files.EVAL_PARTIAL, config)
    clean_logits = _predict(classifier, x)
    result = {"run": str(run_dir), "config": asdict(config), "images": len(x), **subset,
              "denoiser": config.denoiser or train_config.diffaug.denoiser,
              "clean_acc": float((clean_logits.argmax(1) == y).float().mean())}
    if ensemble is not None:
        result["clean_de_acc"] = partial.get("clean_de_acc") or partial.put(
            "clean_de_acc", float((ensemble(x).argmax(1) == y).float().mean()))
    if "corruptions" in config.suites:
        result["corruptions"] = run_corruptions(classifier, ensemble, x, y, config, partial, progress)
        if base_eval is not None:
            base = result["corruptions"] if own else json.loads(base_eval.read_text()).get("corruptions")
            if base:
                result["corruptions"]["mce"] = corruption_error(result["corruptions"], base)["mce"]
                if ensemble is not None:
                    result["corruptions"]["de_mce"] = corruption_error(result["corruptions"], base, "de_acc")["mce"]
                result["corruptions"]["baseline"] = str(baseline)
    if "ood" in config.suites:
        result["ood"] = run_ood(classifier, ensemble, x, config, partial, progress)
        result["ood_labels"] = {name: ood_label(name) for name in result["ood"]}  # what each set is, in words
    if "certify" in config.suites:
        source, chosen = eval_subset(train_config.data.source, "test", config.certify_limit)
        result["certify_subset"] = chosen["eval_subset"]
        result["certify_subset_class_counts"] = chosen["eval_subset_class_counts"]
        result["certify"] = run_certify(classifier, denoiser, *source_images(source, **shape), config, partial,
                                        progress)
    files.write_json(out / files.EVAL, result)
    from diffaug_fast.eval.robustness.report import write_eval_report

    write_eval_report(result, out)
    return result
