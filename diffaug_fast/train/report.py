"""A training run's report: report.md with its numbers, loss/accuracy curves and accuracy vs DiffAug t (PNG).

``compare`` adds a second run (e.g. the baseline) to the table and the plots.
"""
from __future__ import annotations

import json
from pathlib import Path

from diffaug_fast.config import flat_options
from diffaug_fast.eval.plots import figure, finish_figure


def _read_run(run_dir: Path) -> dict:
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.exists():
        raise FileNotFoundError(f"{metrics_path} not found: is {run_dir} a finished `diffaug-fast train` run?")
    log = run_dir / "metrics.jsonl"
    curve = [json.loads(ln) for ln in log.read_text().splitlines() if ln.strip()] if log.exists() else []
    config = flat_options(json.loads((run_dir / "config.json").read_text())) if (run_dir / "config.json").exists() else {}
    return {"dir": run_dir, "metrics": json.loads(metrics_path.read_text()), "curve": curve, "config": config}


def _label(run: dict) -> str:
    cfg = run["config"]
    if cfg.get("mode", "clean") != "clean":
        return f"{run['dir'].name} ({cfg['mode']} classifier)"
    augmix = (f", AugMix + JSD {cfg['jsd']:g}" if cfg.get("jsd") else ", AugMix") if cfg.get("augmix") else ""
    return f"{run['dir'].name} (DiffAug {cfg.get('diffaug', '?')}{augmix})"


def _augmix(cfg: dict) -> str:
    if not cfg.get("augmix"):
        return "off"
    return f"on with Jensen-Shannon weight {cfg['jsd']:g}" if cfg.get("jsd") else "on"


def _share(cfg: dict) -> str:
    if cfg.get("diffaug") != "on":
        return ""
    share, until = cfg.get("diffaug_fraction") or 1, cfg.get("diffaug_until") or 1
    weight = cfg.get("diffaug_weight", 1)
    return ("" if share == 1 else f", DiffAug copies of {share:g} of each batch") + \
        ("" if until == 1 else f", DiffAug for the first {until:.0%} of the steps (clean images alone after)") + \
        ("" if weight == 1 else f", each DiffAug copy weighing {weight:g} of a clean image in the loss")


def _smooth(values: list[float], k: int = 5) -> list[float]:
    out = []
    for i in range(len(values)):
        window = values[max(0, i - k + 1):i + 1]
        out.append(sum(window) / len(window))
    return out


def _plots(runs: list[dict], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    for run in runs:
        steps = [r["step"] for r in run["curve"]]
        ax_loss.plot(steps, _smooth([r["loss"] for r in run["curve"]]), label=_label(run))
        ax_acc.plot(steps, _smooth([r["acc"] for r in run["curve"]]), label=_label(run))
    ax_loss.set(xlabel="step", ylabel="training loss (smoothed)", title="loss")
    ax_acc.set(xlabel="step", ylabel="training-batch accuracy (smoothed)", title="accuracy")
    finish_figure(fig, out_dir / "curves.png", ax_acc)

    if any("acc_per_t_bucket" in r["metrics"] for r in runs):
        with figure(out_dir / "acc_per_t_bucket.png") as ax:
            for run in runs:
                rows = run["metrics"].get("acc_per_t_bucket", [])
                ax.plot([(r["t_from"] + r["t_to"]) / 2 for r in rows], [r["acc"] for r in rows], "-o",
                        label=f"{run['dir'].name} ({run['config'].get('mode')})")
            ax.set(xlabel="t (bucket centre)", ylabel="test accuracy on x_t", title="accuracy per noise level")
        return ["curves.png", "acc_per_t_bucket.png"]

    with figure(out_dir / "acc_vs_t.png") as ax:
        for run in runs:
            m = run["metrics"]
            for key, style, name in (("acc_per_t", "-o", "clean"), ("noisy_acc_per_t", "--s", "noisy")):
                if key in m:
                    ts = sorted(m[key], key=int)
                    ax.plot([int(t) for t in ts], [m[key][t] for t in ts], style, label=f"{_label(run)}: {name}")
        ax.set(xlabel="DiffAug t of the test images", ylabel="test accuracy", title="accuracy on x̂0(x_t, t)")
    return ["curves.png", "acc_vs_t.png"]


ROWS = (("clean_acc_val", "clean accuracy (validation split)"), ("noisy_acc_val", "noisy accuracy (validation split)"),
        ("clean_acc_full_test", "clean accuracy (full test set)"),
        ("noisy_acc_full_test", "noisy accuracy (full test set)"), ("clean_acc", "clean accuracy (eval subset)"),
        ("de_acc", "DiffAug-Ensemble accuracy (eval subset)"), ("noisy_acc", "accuracy on noisy test images"),
        ("noisy_de_acc", "DiffAug-Ensemble accuracy on noisy test images"))


def _subset(m: dict) -> str:
    """Which test images the subset metrics saw (runs before the subsets were class-stratified: the first N)."""
    return m.get("eval_subset") or f"the first {m.get('eval_images')} test images"


def _images(m: dict) -> list[str]:
    """The image shape trained at and where it came from (runs before it was recorded: nothing)."""
    if "image_shape" not in m:
        return []
    return [f"Images {'x'.join(map(str, m['image_shape']))} ({m.get('image_shape_from', '?')})."]


def _budget(cfg: dict) -> str:
    steps = cfg.get("max_steps")
    return f"{steps} step(s) (--max-steps)" if steps else f"{cfg.get('epochs')} epoch(s)"


def write_report(run_dir: str | Path, compare: str | Path | None = None) -> Path:
    run = _read_run(Path(run_dir))
    runs = [run] + ([_read_run(Path(compare))] if compare else [])
    pictures = _plots(runs, run["dir"])
    m, cfg = run["metrics"], run["config"]
    at = f" at {m['denoiser_precision']}" if "denoiser_precision" in m else ""  # runs before it was recorded: ""
    if cfg.get("mode", "clean") != "clean":
        lines = [f"# Training report: {run['dir'].name}", "",
                 f"Time-conditioned {cfg['mode']} classifier (`{cfg.get('model')}` trunk"
                 f"{', ' + cfg.get('fusion', 'input') + ' fusion' if cfg['mode'] == 'da' else ''}) on {cfg.get('data')}, "
                 f"{_budget(cfg)}, batch {cfg.get('batch_size')}, t ~ U over the whole chain of the "
                 f"denoiser `{cfg.get('denoiser')}`{at}, "
                 f"seed {cfg.get('seed')}; evaluated on {_subset(m)}, t drawn uniformly inside each bucket.",
                 *_images(m)]
        runs = [r for r in runs if "acc_per_t_bucket" in r["metrics"]]
        return _finish(run, runs, lines, m, pictures)
    lines = [f"# Training report: {run['dir'].name}", "",
             f"Classifier `{cfg.get('model')}` on {cfg.get('data')}, {_budget(cfg)}, batch "
             f"{cfg.get('batch_size')}, DiffAug `{cfg.get('diffaug')}` (t in [{cfg.get('t_min')}, "
             f"{cfg.get('t_max') if cfg.get('t_max') is not None else 'T-1'}], denoiser `{cfg.get('denoiser')}`{at}), "
             f"AugMix {_augmix(cfg)}{_share(cfg)}, seed {cfg.get('seed')}.", *_images(m),
             f"Validation split: {m.get('val_split', 'none (every training image trained)')}. "
             f"Evaluation subset: {_subset(m)}; noisy = Gaussian noise of std "
             f"{cfg.get('noise_std')} (pixels in [-1, 1]; the full sets: mean of {cfg.get('noise_draws', 1)} "
             f"draws); DiffAug-Ensemble over t = "
             f"{', '.join(map(str, cfg.get('de_timesteps', [])))}.", "",
             "| metric | " + " | ".join(_label(r) for r in runs) + " |",
             "|---|" + "---|" * len(runs)]
    for key, name in ROWS:
        if any(key in r["metrics"] for r in runs):
            cells = [f"{100 * r['metrics'][key]:.2f}%" if key in r["metrics"] else "-" for r in runs]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return _finish(run, runs, lines, m, pictures)


def _finish(run: dict, runs: list[dict], lines: list[str], m: dict, pictures: list[str]) -> Path:
    if "acc_per_t_bucket" in m:
        others = [r for r in runs if "acc_per_t_bucket" in r["metrics"]]
        lines += ["", "Accuracy on noisy test images x_t per t-bucket (%):", "",
                  "| t | " + " | ".join(f"{r['dir'].name} ({r['config'].get('mode')})" for r in others) + " |",
                  "|---|" + "---|" * len(others)]
        for k, row in enumerate(m["acc_per_t_bucket"]):
            cells = [f"{100 * r['metrics']['acc_per_t_bucket'][k]['acc']:.1f}" for r in others]
            lines.append(f"| {row['t_from']}–{row['t_to']} | " + " | ".join(cells) + " |")
    if "acc_per_t" in m:
        lines += ["", "Accuracy on DiffAug-ed test images per t (clean / noisy inputs):", "",
                  "| t | " + " | ".join(m["acc_per_t"]) + " |", "|---|" + "---|" * len(m["acc_per_t"]),
                  "| clean | " + " | ".join(f"{100 * v:.1f}" for v in m["acc_per_t"].values()) + " |"]
        if "noisy_acc_per_t" in m:
            lines.append("| noisy | " + " | ".join(f"{100 * v:.1f}" for v in m["noisy_acc_per_t"].values()) + " |")
    lines += ["", *(f"![{p}]({p})" for p in pictures), ""]
    path = run["dir"] / "report.md"
    path.write_text("\n".join(lines))
    return path
