"""How good a denoiser is, on the data it was trained on: x0 MSE per t-bucket on the test split next to the MSE of
always answering the mean training image (a denoiser worse than that at large t has not learned the data), a
DDIM-50 sample grid and DiffAug examples (PNG), and report.md. ``diffaug-fast denoiser-report`` and the end of
``train-denoiser`` write it. Each step that takes more than a moment shows a tqdm bar or a status line on stderr
(``progress=False``: none)."""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from torchvision.utils import save_image
from tqdm.auto import tqdm

from diffaug_fast import streams
from diffaug_fast.augment import at_precision
from diffaug_fast.errors import DiffAugError
from diffaug_fast.runs import files

from diffaug_fast.data import eval_images, load_dataset
from diffaug_fast.diffusion import Denoiser, q_sample
from diffaug_fast.diffusion.sampling import eps_model, sample


@torch.inference_mode()
def x0_mse_per_bucket(denoiser: Denoiser, images: torch.Tensor, buckets: int = 10, batch: int = 500,
                      seed: int = 0, precision: str = "fp32", progress: bool = False) -> list[dict]:
    """Mean squared error of x0_hat against x0 (pixels in [-1, 1]) for t drawn uniformly in each bucket, the network
    at ``precision`` (fp32 | bf16 | fp16 | auto); the same t and noise at every precision. ``progress``: a bar of
    the images denoised (``buckets`` passes over ``images``)."""
    with at_precision(denoiser, precision), tqdm(total=buckets * len(images), unit="img", disable=not progress,
                                                 desc=f"report: x0 MSE per t ({precision})") as bar:
        return _x0_mse_per_bucket(denoiser, images, buckets, batch, seed, bar)


def status(message: str, progress: bool = True) -> None:
    """A line on stderr for a slow step without a bar of its own (tqdm.write keeps an open bar intact)."""
    if progress:
        tqdm.write(message, file=sys.stderr)


def _x0_mse_per_bucket(denoiser: Denoiser, images: torch.Tensor, buckets: int, batch: int, seed: int,
                       bar: tqdm) -> list[dict]:
    steps = len(denoiser.schedule)
    edges = torch.linspace(0, steps, buckets + 1).long()
    gen = streams.generator(seed, "report_timesteps")
    rows = []
    for k in range(buckets):
        total, count = 0.0, 0
        for start in range(0, len(images), batch):
            x0 = images[start:start + batch]
            t = torch.randint(int(edges[k]), int(edges[k + 1]), (len(x0),), generator=gen).to(x0.device)
            xt = q_sample(denoiser.schedule, x0, t, seed=streams.philox_seed(seed, "report_eps", k),
                          offset=start * x0[0].numel())
            total += float((denoiser(xt, t) - x0).square().mean()) * len(x0)
            count += len(x0)
            bar.update(len(x0))
        rows.append({"t_from": int(edges[k]), "t_to": int(edges[k + 1]) - 1, "x0_mse": total / count})
    return rows


ENSEMBLE_T_BELOW = 500  # the default DiffAug-Ensemble timesteps (0 ... 450) lie in the buckets below t = 500
LARGE_T_FROM = 600  # where a short-trained eps model's x̂0 is worse than the mean image


def x0_mse_summary(rows: list[dict], mean_image_mse: float, precision: str = "fp32",
                   others: list[str] | tuple[str, ...] = ()) -> dict:
    """x0_mse_summary.json: the x̂0 MSE per t-bucket (``rows``) summed up under plain keys: the mean over buckets,
    over the ensemble's buckets (t < 500) and over t >= 600, how many buckets are worse than answering the mean
    image, and per other precision the worst bucket's relative change against the first (the quality gate:
    ``worst_relative_change.bf16`` <= 0.02)."""
    def mean(values):
        values = list(values)
        return float(sum(values) / len(values)) if values else None

    return {"precision": precision, "buckets": len(rows), "mean_image_mse": mean_image_mse,
            "x0_mse_mean": mean(r["x0_mse"] for r in rows),
            "x0_mse_t_below_500": mean(r["x0_mse"] for r in rows if r["t_to"] < ENSEMBLE_T_BELOW),
            "x0_mse_t600_up": mean(r["x0_mse"] for r in rows if r["t_from"] >= LARGE_T_FROM),
            "buckets_worse_than_mean_image": sum(r["x0_mse"] > mean_image_mse for r in rows),
            "worst_relative_change": {p: max(r[f"ratio_{p}"] - 1 for r in rows) for p in others}}


@torch.inference_mode()
def write_report(denoiser: Denoiser, out_dir: str | Path, images: torch.Tensor | None = None, *,
                 mean_image: torch.Tensor | None = None, limit: int = 2000, samples: int = 64, seed: int = 0,
                 title: str = "denoiser", precisions: tuple[str, ...] | list[str] = ("fp32",),
                 progress: bool = True) -> dict:
    """The report of ``denoiser`` on test ``images`` (default: a class-stratified ``limit`` of Fashion-MNIST's; a
    caller's: its first ``limit``, so pass a subset, e.g. ``data.eval_images``); ``mean_image``
    (default: theirs) is the trivial x0 estimate each row is compared with. ``precisions``: the first is the
    network's precision for the report's column and pictures; each other adds ``x0_mse_<p>`` and its ratio to it.
    ``progress``: bars and status lines on stderr for the slow steps."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if images is None:
        status(f"report: reading {limit} Fashion-MNIST test images", progress)
        images, _ = eval_images("fmnist", "test", limit=limit, image_size=28, channels=1)  # class-stratified
    images = images[:limit].to(next(denoiser.parameters()).device)  # the test images go where the network runs
    problem = denoiser.shape_problem(images.shape[1:]) if hasattr(denoiser, "shape_problem") else None
    if problem is not None:
        raise DiffAugError(f"argument --data does not fit the denoiser: {problem}; pass the images it was trained on")
    mean = (images.mean(0) if mean_image is None else mean_image).to(images)
    baseline = float((images - mean).square().mean())
    first, others = precisions[0], list(precisions[1:])
    rows = x0_mse_per_bucket(denoiser, images, seed=seed, precision=first, progress=progress)
    for row in rows:
        row["mean_image_mse"] = baseline
    for p in others:
        for row, other in zip(rows, x0_mse_per_bucket(denoiser, images, seed=seed, precision=p, progress=progress)):
            row[f"x0_mse_{p}"] = other["x0_mse"]
            row[f"ratio_{p}"] = other["x0_mse"] / max(row["x0_mse"], 1e-12)
    files.write_json(out_dir / files.DENOISER_REPORT, rows)
    summary = x0_mse_summary(rows, baseline, first, others)
    files.write_json(out_dir / files.DENOISER_SUMMARY, summary)

    with at_precision(denoiser, first):
        _pictures(denoiser, images, out_dir, samples, seed, progress)
    extra = "".join(f" {p} x̂0 MSE | / {first} |" for p in others)
    worse = [r for r in rows if r["x0_mse"] > baseline]
    lines = [f"# Denoiser report: {title}", "",
             f"x̂0 MSE on {len(images)} test images ({'x'.join(map(str, images.shape[1:]))}, pixels in [-1, 1]) per "
             f"t-bucket, the network at {first}, next to the MSE of always answering the mean training image "
             f"({baseline:.4f}).", "",
             f"| t | x̂0 MSE | / mean-image MSE |{extra}", "|---|---|---|" + "---|---|" * len(others),
             *(f"| {r['t_from']}–{r['t_to']} | {r['x0_mse']:.4f} | {r['x0_mse'] / max(baseline, 1e-12):.2f} |"
               + "".join(f" {r[f'x0_mse_{p}']:.4f} | {r[f'ratio_{p}']:.4f} |" for p in others) for r in rows), "",
             (f"**Worse than the mean image at {len(worse)} of {len(rows)} t-buckets**: the model has not learned "
              "these images (train longer; see the warning of `train-denoiser`)." if worse else
              "Better than the mean image at every t-bucket."), "",
             "![samples](samples_ddim50.png)", "", "![DiffAug examples](diffaug_examples.png)", ""]
    (out_dir / files.REPORT).write_text("\n".join(lines))
    return {"x0_mse_per_t": rows, "summary": summary, "mean_image_mse": baseline, "worse_than_mean": len(worse),
            "pictures": ["samples_ddim50.png", "diffaug_examples.png"], "report": str(out_dir / files.REPORT),
            "precisions": list(precisions)}


def _pictures(denoiser: Denoiser, images: torch.Tensor, out_dir: Path, samples: int, seed: int,
              progress: bool) -> None:
    """The DDIM-50 sample grid and the DiffAug examples (x̂0 at t = 0, 100, ..., 900 of 8 test images)."""
    model, chain = eps_model(denoiser)
    shape = tuple(images.shape[1:])
    grid = sample(model, (samples, *shape), chain, steps="ddim50", mode="ddim", seed=seed,
                  progress=progress and f"report: DDIM-50 sampling of {samples} images", device=images.device)
    save_image(grid.add(1).div(2).clamp(0, 1), out_dir / "samples_ddim50.png", nrow=int(samples**0.5 + 0.5),
               padding=1)

    ts = [0, 100, 200, 300, 400, 500, 600, 700, 800, 900]
    ts = [t * len(denoiser.schedule) // 1000 for t in ts]
    shown = images[:8]
    columns = [shown]
    for t in tqdm(ts[1:], desc="report: DiffAug examples", unit="t", disable=not progress):
        tt = torch.full((len(shown),), t, device=shown.device)
        columns.append(denoiser(q_sample(denoiser.schedule, shown, tt, seed=seed), tt))
    pictures = torch.stack(columns, 1).flatten(0, 1)
    save_image(pictures.add(1).div(2).clamp(0, 1), out_dir / "diffaug_examples.png", nrow=len(ts), padding=1)


def report_command(o, out_dir: Path) -> dict:
    """``diffaug-fast denoiser-report``: any denoiser the package loads, on the data it was trained on (``--data``;
    default: the data its train-denoiser export recorded, Fashion-MNIST for the shipped ones)."""
    from diffaug_fast.devices import run_device
    from diffaug_fast.runs.provenance import denoiser_data
    from diffaug_fast.runs.weights import load_denoiser

    flags = getattr(o, "denoiser_flags", None)
    device = run_device(o.device)  # an impossible --device fails before anything loads
    denoiser = load_denoiser(o.model, device, flags=flags) if flags else load_denoiser(o.model, device)
    data = o.data or denoiser_data(o.model)
    if data is None:
        raise DiffAugError(f"argument --data: give the images {o.model} was trained on (fmnist, cifar10:DIR or an "
                           "image folder); its files do not say")
    channels, size = (denoiser.image_shape or (1, 28, 28))[0], (denoiser.image_shape or (1, 28, 28))[-1]
    if channels not in (1, 3):
        raise DiffAugError(f"argument --model {o.model}: works on {channels}-channel images; the report reads 1 or 3")
    status(f"report: reading up to {o.limit} test images of {data}")
    test, _ = eval_images(data, "test", limit=o.limit, image_size=size, channels=channels, decode=True)
    problem = denoiser.shape_problem(test.shape[1:]) if hasattr(denoiser, "shape_problem") else None
    if problem is not None:
        raise DiffAugError(f"argument --data {data} does not fit the denoiser: {problem}; pass the images it was "
                           "trained on")
    status(f"report: reading up to {max(o.limit, 2000)} training images of {data} for the mean image")
    train, _ = load_dataset(data, "train", limit=max(o.limit, 2000), image_size=size, channels=channels)
    return write_report(denoiser, out_dir, test, mean_image=train.mean(0), limit=o.limit, samples=o.samples,
                        seed=o.seed, title=f"{o.model} on {data}",
                        precisions=getattr(o, "denoiser_precision", None) or ["fp32"])
