"""How good a trained classifier is: clean / noisy-test accuracy with DiffAug-Ensemble (clean classifiers),
accuracy and F1 per diffusion-time bucket (noisy / DA classifiers), and how often a noisy / DA classifier
changes its mind between nearby diffusion times. Every random draw is a named stream (streams.py)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from diffaug_fast import streams
from diffaug_fast.augment import DiffAugEnsemble, partner_timesteps
from diffaug_fast.ops import diffuse


def chunks(n: int, size: int):
    """Slices of at most ``size`` covering ``range(n)``."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def f1_score(pred: torch.Tensor, target: torch.Tensor) -> float:
    """F1 of the positive class (1) for 0/1 predictions and targets (0 when nothing is predicted positive)."""
    from sklearn.metrics import f1_score as sk_f1

    return float(sk_f1(target.cpu().numpy(), pred.cpu().numpy(), pos_label=1, zero_division=0.0))


@torch.inference_mode()
def accuracy(model, images, labels, *, batch: int = 1000, device="cpu") -> float:
    model.eval()
    correct = 0
    for sl in chunks(len(images), batch):
        correct += int((model(images[sl].to(device)).argmax(1).cpu() == labels[sl]).sum())
    return correct / max(len(images), 1)


@torch.inference_mode()
def noisy_accuracies(model, images, labels, *, noise_std: float, draws: int, seed: int = 0, batch: int = 1000,
                     device="cpu") -> list[float]:
    """Accuracy on ``images`` + N(0, noise_std²) for each of ``draws`` independent noise draws (one stream, in
    order): a whole test set's noisy accuracy without one draw's luck (one draw of 1 000 images swung 11-30 points
    between equally trained baselines)."""
    model.eval()
    generator = streams.generator(seed, "eval_noise_draws")
    result = []
    for _ in range(draws):
        correct = 0
        for sl in chunks(len(images), batch):
            x = images[sl]
            x = x + noise_std * torch.randn(x.shape, generator=generator)
            correct += int((model(x.to(device)).argmax(1).cpu() == labels[sl]).sum())
        result.append(correct / max(len(images), 1))
    return result


@torch.inference_mode()
def evaluate(model, denoiser, images, labels, *, timesteps, noise_std: float, seed: int = 0, batch: int = 250,
             fast_net=None, device="cpu", progress: bool = False) -> dict:
    """Clean accuracy; per-t DiffAug accuracy and DiffAug-Ensemble accuracy (clean and Gaussian-noised inputs)."""
    model.eval()
    result = {"clean_acc": accuracy(model, images, labels, device=device), "eval_images": len(images)}
    noisy = images + noise_std * torch.randn(images.shape, generator=streams.generator(seed, "eval_noise"))
    result["noisy_acc"] = accuracy(model, noisy, labels, device=device)
    if denoiser is None or not timesteps:
        return result
    ensemble = DiffAugEnsemble(model, denoiser, timesteps, seed=seed, max_batch=batch * len(timesteps))
    if fast_net is not None:
        ensemble.fast_net = fast_net
    for name, inputs in (("", images), ("noisy_", noisy)):
        probs = []
        for sl in tqdm(list(chunks(len(inputs), batch)), desc=f"DiffAug-Ensemble ({name or 'clean '}test)",
                       disable=not progress, leave=False):
            probs.append(ensemble.probabilities_per_t(inputs[sl].to(device), offset=sl.start * inputs[0].numel())
                         .cpu())
        probs = torch.cat(probs, 1)  # [T, N, K]
        per_t = (probs.argmax(-1) == labels).float().mean(1)
        result[f"{name}de_acc"] = float((probs.mean(0).argmax(-1) == labels).float().mean())
        result[f"{name}acc_per_t"] = {int(t): float(a) for t, a in zip(timesteps, per_t)}
    return result


@torch.inference_mode()
def evaluate_noisy(model, denoiser, images, labels, *, buckets: int = 10, seed: int = 0, batch: int = 500,
                   device="cpu", f1: bool = False) -> dict:
    """Accuracy (and with ``f1``, the positive class's F1) of a noisy / DA classifier on test images diffused
    to t drawn uniformly in each t-bucket."""
    model.eval()
    steps = len(denoiser.schedule)
    edges = torch.linspace(0, steps, buckets + 1).long()
    gen = streams.generator(seed, "eval_timesteps")
    rows = []
    for k in range(buckets):
        predictions = []
        for sl in chunks(len(images), batch):
            x0 = images[sl].to(device)
            t = torch.randint(int(edges[k]), int(edges[k + 1]), (len(x0),), generator=gen).to(device)
            a, s = denoiser.schedule.coefficients(t, device=device)
            x_t = diffuse(x0, a, s, seed=streams.philox_seed(seed, "eval_eps", k), offset=sl.start * x0[0].numel())
            predictions.append(model(x_t, t).argmax(1).cpu())
        pred = torch.cat(predictions)
        rows.append({"t_from": int(edges[k]), "t_to": int(edges[k + 1]) - 1,
                     "acc": float((pred == labels).float().mean()), **({"f1": f1_score(pred, labels)} if f1 else {})})
    result = {"acc_per_t_bucket": rows, "mean_acc_over_t": sum(r["acc"] for r in rows) / buckets,
              "eval_images": len(images)}
    if f1:
        result["mean_f1_over_t"] = sum(r["f1"] for r in rows) / buckets
    return result


@torch.inference_mode()
def disagreement(model, denoiser, images: torch.Tensor, *, radius: int, seed: int = 0, batch: int = 500,
                 device="cpu") -> dict:
    """How often a noisy / DA classifier changes its mind between x_t and x_t' of the same image and ε
    (t uniform, t' within ``radius``): the fraction of different top classes and the mean symmetric KL."""
    model.eval()
    last = len(denoiser.schedule) - 1
    gen = streams.generator(seed, "tc_timesteps")
    changed, sym_kl = 0, 0.0
    for start in range(0, len(images), batch):
        x0 = images[start:start + batch].to(device)
        t = torch.randint(0, last + 1, (len(x0),), generator=gen)
        t2 = partner_timesteps(t, radius, last, gen)
        logits = []
        for tt in (t.to(device), t2.to(device)):
            a, s = denoiser.schedule.coefficients(tt, device=device)
            x_t = diffuse(x0, a, s, seed=streams.philox_seed(seed, "tc_eps"), offset=start * x0[0].numel())
            logits.append(F.log_softmax(model(x_t, tt).float(), -1))
        changed += int((logits[0].argmax(1) != logits[1].argmax(1)).sum())
        p, q = logits[0].exp(), logits[1].exp()
        sym_kl += float(((p - q) * (logits[0] - logits[1])).sum())
    return {"top_class_changed": changed / len(images), "symmetric_kl": sym_kl / len(images), "radius": radius}
