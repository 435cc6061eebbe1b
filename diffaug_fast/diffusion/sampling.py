"""Ancestral DDPM and DDIM sampling, optionally classifier-guided, through the fused guided_step op.

Small composable pieces in the k-diffusion spirit: any ``model(x_t, t) -> eps`` (t is the network's
own timestep, so respaced chains work), any ``guidance(x_t, t) -> ∇log p(y|x_t)`` on the chain's x_t.
For a VE denoiser the chain is its VP equivalent (:func:`eps_model`); :func:`chain_guidance` turns a
guidance written for the denoiser's own x_t (what its classifiers were trained on) into the chain's.
"""
from __future__ import annotations

from typing import Callable

import torch
from tqdm.auto import tqdm

from diffaug_fast.diffusion.denoiser import Denoiser
from diffaug_fast.diffusion.process import predict_x0
from diffaug_fast.diffusion.schedules import Schedule, respace
from diffaug_fast.diffusion.steps import step_coefficients
from diffaug_fast.diffusion.ve import vp_equivalent
from diffaug_fast.ops import diffuse, guided_step

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Guidance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def sample(model: Model, shape, schedule: Schedule, *, steps: str | int | None = None, mode: str = "ddim",
           eta: float = 0.0, variance: str = "fixed_small", learn_sigma: bool = False,
           guidance: Guidance | None = None, scale: float = 1.0, clip: float | bool | None = True, seed: int = 0,
           ddim_guidance: str = "guided_diffusion", device="cpu", dtype=torch.float32, progress: bool | str = True,
           backend: str | None = None, first: int = 0, total: int | None = None) -> torch.Tensor:
    """Draw samples of ``shape`` from ``model`` by walking ``schedule`` (respaced to ``steps``) backwards.

    The same ``seed`` gives the same images on every run and backend: the initial noise and each
    step's noise come from the Philox stream at consecutive offsets. ``shape`` may be one batch of a larger
    draw: images ``first`` to ``first + shape[0]`` of ``total``, whose noise is exactly the whole draw's, so any
    batch size gives the same images. Guided DDIM is guided-diffusion's
    ``ddim_sample`` with a ``cond_fn`` (condition_score) unless ``ddim_guidance='clip_after_shift'``
    (see :func:`diffaug_fast.ops.guided_step`); guided DDPM is its ``p_sample`` (condition_mean).
    """
    chain = respace(schedule, steps) if steps is not None else schedule
    x = torch.zeros(shape, device=device, dtype=dtype)
    batch = shape[0]
    total = batch if total is None else total
    if not (0 <= first and first + batch <= total):
        raise ValueError(f"images {first} to {first + batch} are not inside a draw of total={total}")
    per_image = x[:1].numel()
    start, numel = first * per_image, total * per_image  # this batch's place in the whole draw's noise
    x = diffuse(x, 0.0, 1.0, seed=seed, offset=start, backend=backend)  # x_T ~ N(0, I)
    desc = progress if isinstance(progress, str) else f"{mode} sampling"
    for step, i in enumerate(tqdm(range(len(chain) - 1, -1, -1), desc=desc, disable=not progress,
                                      leave=batch == total)):
        index = torch.full((batch,), i, device=device, dtype=torch.long)
        t_model = chain.model_timesteps(index)
        out = model(x, t_model)
        grad = None
        if guidance is not None and scale != 0:
            with torch.enable_grad():
                grad = guidance(x, t_model).to(x.dtype)
        coef = step_coefficients(chain, index, mode=mode, eta=eta, variance=variance, device=device)
        x = guided_step(x, out, coef, mode=mode, grad=grad, scale=scale, clip=clip, learn_sigma=learn_sigma,
                        ddim_guidance=ddim_guidance, seed=seed, offset=numel * (step + 1) + start,
                        backend=backend)
    return x


def classifier_guidance(classifier: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                        labels: torch.Tensor) -> Guidance:
    """∇_x log p(y|x_t, t) of a time-conditioned classifier (logits = classifier(x_t, t)) for fixed labels."""

    def grad(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x = x.detach().requires_grad_(True)
        log_probs = torch.log_softmax(classifier(x, t).float(), dim=-1)
        selected = log_probs[torch.arange(len(labels), device=x.device), labels.to(x.device)]
        return torch.autograd.grad(selected.sum(), x)[0]

    return grad


def eps_model(denoiser: Denoiser) -> tuple[Model, Schedule]:
    """``(model, schedule)`` that :func:`sample` can walk for any Denoiser.

    The model predicts eps on a VP chain: VP denoisers as they are, VE ones through their VP equivalent
    (``x_vp = x_ve / sqrt(1 + sigma^2)``, same eps). Non-eps parametrizations are converted through the
    unclipped x0 estimate, ``eps = (x_t - a_t*x0_hat) / s_t``.
    """
    native = denoiser.schedule
    chain = native if native.kind == "vp" else vp_equivalent(native)

    def model(x: torch.Tensor, t_model: torch.Tensor) -> torch.Tensor:
        index = torch.searchsorted(native.timesteps.to(t_model.device), t_model)
        x_native = x
        if native.kind == "ve":
            x_native = x / _chain_signal(chain, index, x)
        out = denoiser.model_output(x_native, index)
        if denoiser.parametrization == "eps":
            return out
        a, s = native.coefficients(index, device=x.device)
        x0 = predict_x0(native, x_native, index, out, parametrization=denoiser.parametrization,
                        learn_sigma=denoiser.learn_sigma)
        shape = (-1, *([1] * (x.dim() - 1)))
        return (x_native - a.view(shape) * x0) / s.view(shape)

    return model, chain


def _chain_signal(chain: Schedule, index: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """a = chain.signal at grid ``index``, per example, float32: x_chain = a * x_native on a VE's VP chain."""
    return chain.signal.to(x.device, torch.float32)[index].view(-1, *([1] * (x.dim() - 1)))


def chain_guidance(denoiser: Denoiser, guidance: Guidance) -> Guidance:
    """The guidance :func:`sample` needs on the chain of ``eps_model(denoiser)``, from ``guidance(x, t) ->
    ∇_x log p(y|x)`` written for the denoiser's own x_t (what its classifiers are trained on; t the network's
    timestep, as :func:`sample` passes it).

    VP denoisers walk their own chain: ``guidance`` is returned as it is. A VE denoiser's chain holds
    ``x_vp = a*x_ve`` (``a = 1/sqrt(1 + sigma^2)``), so the classifier is shown ``x_ve = x_vp / a`` and the
    gradient is taken with respect to the chain's variable: ``∇_{x_vp} log p(y | x_vp/a) = (1/a)·∇_{x_ve} log p``.
    """
    native = denoiser.schedule
    if native.kind == "vp":
        return guidance
    chain = vp_equivalent(native)

    def grad(x: torch.Tensor, t_model: torch.Tensor) -> torch.Tensor:
        a = _chain_signal(chain, torch.searchsorted(native.timesteps.to(t_model.device), t_model), x)
        return guidance(x / a, t_model) / a

    return grad
