"""How good a denoiser is: x0 MSE per t-bucket on the test set, samples, and DiffAug examples (PNG)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from diffaug_fast import streams
from torchvision.utils import save_image

from diffaug_fast.data import load_fashion_mnist
from diffaug_fast.diffusion import Denoiser, q_sample
from diffaug_fast.diffusion.sampling import eps_model, sample


@torch.inference_mode()
def x0_mse_per_bucket(denoiser: Denoiser, images: torch.Tensor, buckets: int = 10, batch: int = 500,
                      seed: int = 0) -> list[dict]:
    """Mean squared error of x0_hat against x0 (pixels in [-1, 1]) for t drawn uniformly in each bucket."""
    steps = len(denoiser.schedule)
    edges = torch.linspace(0, steps, buckets + 1).long()
    gen = streams.generator(seed, "report_timesteps")
    rows = []
    for k in range(buckets):
        total, count = 0.0, 0
        for start in range(0, len(images), batch):
            x0 = images[start:start + batch]
            t = torch.randint(int(edges[k]), int(edges[k + 1]), (len(x0),), generator=gen)
            xt = q_sample(denoiser.schedule, x0, t, seed=streams.philox_seed(seed, "report_eps", k),
                          offset=start * x0[0].numel())
            total += float((denoiser(xt, t) - x0).square().mean()) * len(x0)
            count += len(x0)
        rows.append({"t_from": int(edges[k]), "t_to": int(edges[k + 1]) - 1, "x0_mse": total / count})
    return rows


@torch.inference_mode()
def write_report(denoiser: Denoiser, out_dir: str | Path, *, limit: int = 2000, seed: int = 0) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images, _ = load_fashion_mnist("test", limit=limit)
    rows = x0_mse_per_bucket(denoiser, images, seed=seed)
    (out_dir / "x0_mse_per_t.json").write_text(json.dumps(rows, indent=2))

    model, chain = eps_model(denoiser)
    samples = sample(model, (64, 1, 28, 28), chain, steps="ddim50", mode="ddim", seed=seed, progress=False)
    save_image(samples.add(1).div(2).clamp(0, 1), out_dir / "samples_ddim50.png", nrow=8, padding=1)

    ts = [0, 100, 200, 300, 400, 500, 600, 700, 800, 900]
    shown = images[:8]
    columns = [shown]
    for t in ts[1:]:
        tt = torch.full((len(shown),), t)
        columns.append(denoiser(q_sample(denoiser.schedule, shown, tt, seed=seed), tt))
    grid = torch.stack(columns, 1).flatten(0, 1)
    save_image(grid.add(1).div(2).clamp(0, 1), out_dir / "diffaug_examples.png", nrow=len(ts), padding=1)
    return {"x0_mse_per_t": rows, "pictures": ["samples_ddim50.png", "diffaug_examples.png"]}
