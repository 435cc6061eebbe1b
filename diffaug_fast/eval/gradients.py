"""Pictures of classifier gradients: is ∇_x log p(y | x_t, t) perceptually aligned?

For chosen test images x0 and several t, the gradient of the true class's log-probability at
``x_t ~ q(x_t | x0)`` of each classifier (e.g. the noisy and the DA classifier) is drawn as an image, and
summarised by its cosine similarity with ``x0 - x_t`` (the direction that removes the noise: a perceptually
aligned gradient points there; an adversarial-looking one is close to orthogonal to it).
"""
from __future__ import annotations

from pathlib import Path

import torch

from diffaug_fast.ops import diffuse


def class_gradient(classifier, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """∇_{x_t} log softmax(classifier(x_t, t))[label], per image."""
    x = x_t.detach().requires_grad_(True)
    with torch.enable_grad():
        logp = torch.log_softmax(classifier(x, t).float(), -1)[torch.arange(len(x)), labels]
        return torch.autograd.grad(logp.sum(), x)[0]


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)


def gradient_study(classifiers: dict, denoiser, images: torch.Tensor, labels: torch.Tensor, timesteps,
                   *, seed: int = 0) -> dict:
    """Per classifier and t: gradients [N, C, H, W], x_t, and cos(grad, x0 - x_t) per image."""
    out = {"x_t": {}, "grad": {name: {} for name in classifiers}, "cosine": {name: {} for name in classifiers}}
    for k, t in enumerate(timesteps):
        tt = torch.full((len(images),), int(t))
        a, s = denoiser.schedule.coefficients(tt)
        x_t = diffuse(images, a, s, seed=seed, offset=k * images.numel())
        out["x_t"][int(t)] = x_t
        for name, clf in classifiers.items():
            g = class_gradient(clf, x_t, tt, labels)
            out["grad"][name][int(t)] = g
            out["cosine"][name][int(t)] = cosine(g, images - x_t)
    return out


def _normalise(g: torch.Tensor) -> torch.Tensor:
    """Each gradient image to [0, 1] around grey, by its own largest magnitude."""
    scale = g.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return 0.5 + 0.5 * g / scale


def save_gradient_grid(study: dict, images: torch.Tensor, path: str | Path, rows: int | None = None) -> Path:
    """Rows: the first ``rows`` images (all by default); columns: x0, then per t: x_t and each classifier's
    gradient."""
    from torchvision.utils import save_image

    rows = len(images) if rows is None else min(rows, len(images))
    columns = [images[:rows].add(1).div(2)]
    for t in study["x_t"]:
        columns.append(study["x_t"][t][:rows].add(1).div(2).clamp(0, 1))
        for name in study["grad"]:
            columns.append(_normalise(study["grad"][name][t][:rows]))
    grid = torch.stack(columns, 1).flatten(0, 1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path, nrow=len(columns), padding=1, pad_value=1.0)
    return path


def alignment_summary(study: dict, runs: dict[str, tuple[str, str]], images: int, seed: int) -> dict:
    """gradient_alignment.json: per classifier, in the ``--classifier`` order, its mean cosine between the class
    gradient and x0 - x_t at each t. ``runs``: the study's classifier name -> (run folder, mode). Stable keys
    (``classifiers.<i>.cosine.<t>``), so a declared study reads one number whatever its run folders are called."""
    return {"images": images, "seed": seed,
            "classifiers": [{"name": name, "run": runs[name][0], "mode": runs[name][1],
                             "cosine": {str(t): float(c.mean()) for t, c in per_t.items()}}
                            for name, per_t in study["cosine"].items()]}


def gradients_command(o, out: Path) -> dict:
    """``diffaug-fast gradients``: each run's class gradients at ``o.t`` on the test images of the data the runs were
    trained on (at their size and channels), as a picture and mean cosines with x0 - x_t (gradient_alignment.json)."""
    import json

    from diffaug_fast.data import eval_images
    from diffaug_fast.devices import OnDevice, run_device
    from diffaug_fast.errors import DiffAugError
    from diffaug_fast.runs.classifiers import load_classifier
    from diffaug_fast.runs.weights import load_denoiser

    device = run_device(o.device)  # the classifiers run there; x_t and the gradients are made and kept on the CPU
    classifiers, runs, denoisers, datas = {}, {}, set(), set()
    for run in o.classifier:
        clf, cfg = load_classifier(run, device)
        if cfg.model.mode == "clean":
            raise DiffAugError(f"argument --classifier {run} is a clean-image classifier; gradients at x_t need a "
                               "`train --mode noisy|da` run")
        name = f"{Path(run).name} ({cfg.model.mode})"
        if name in classifiers:  # two folders of the same name (a study's <variant>/seed0): keep both apart
            name = f"{run} ({cfg.model.mode})"
        classifiers[name], runs[name] = OnDevice(clf, device), (str(run), cfg.model.mode)
        datas.add((cfg.data.source, cfg.data.channels, cfg.data.image_size))
        denoisers.add((cfg.diffaug.denoiser, cfg.diffaug.denoiser_flags))
    if len(denoisers) != 1:
        raise DiffAugError(f"argument --classifier: the runs use different diffusion models "
                           f"({', '.join(sorted(name for name, _ in denoisers))}, or other --denoiser-flags)")
    name, flags = denoisers.pop()
    denoiser = load_denoiser(name, flags=flags)  # its schedule only: x_t is made on the CPU
    if len(datas) != 1:
        raise DiffAugError(f"argument --classifier: the runs were trained on different data "
                           f"({', '.join(f'{d} at {c}x{n}x{n}' for d, c, n in sorted(datas))})")
    source, channels, size = datas.pop()  # the runs' own test images, at their size and channels
    images, labels = eval_images(source, "test", limit=o.images, image_size=size, channels=channels,  # stratified
                                 decode=True)
    study = gradient_study(classifiers, denoiser, images, labels, o.t, seed=o.seed)
    path = save_gradient_grid(study, images, out / "gradients.png", rows=o.picture_rows)
    summary = alignment_summary(study, runs, len(images), o.seed)
    (out / "gradient_alignment.json").write_text(json.dumps(summary, indent=2))
    for entry in summary["classifiers"]:
        print(f"{entry['name']}: mean cos(grad, x0 - x_t) over {len(images)} test images "
              + ", ".join(f"t={t}: {v:+.3f}" for t, v in entry["cosine"].items()))
    print(f"picture: {path} (rows: the first {min(o.picture_rows, len(images))} test images; columns: x0, then per t: "
          "x_t and each classifier's gradient)")
    return summary
