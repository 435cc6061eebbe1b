"""Guided DDIM is guided-diffusion's ``ddim_sample`` with a ``cond_fn`` (its ``condition_score``).

The oracle here is our own float64 transcription of the per-step formulas of openai/guided-diffusion
(gaussian_diffusion.py, ``p_mean_variance`` -> ``condition_score`` -> ``ddim_sample``), written from the
equations, in their arithmetic form (``sqrt_recip_alphas_cumprod`` / ``sqrt_recipm1_alphas_cumprod``):

    x0  = clip(x_t/a - sqrt(1/abar - 1)*eps)                    p_mean_variance, clip_denoised
    eps = (x_t/a - x0) / sqrt(1/abar - 1) - sqrt(1 - abar)*g    condition_score (g = cond_fn = scale*grad)
    x0  = x_t/a - sqrt(1/abar - 1)*eps                          condition_score: NOT clipped again
    eps = (x_t/a - x0) / sqrt(1/abar - 1)                       ddim_sample
    out = sqrt(abar_prev)*x0 + sqrt(1 - abar_prev - sigma^2)*eps + [t > 0]*sigma*z

``sample()`` is checked against it at every step of short and full chains, linear and cosine schedules,
learned-sigma model outputs (whose variance half DDIM must ignore), eta 0 and 1 with the same noise.
"""
from __future__ import annotations

import math

import pytest
import torch

from diffaug_fast.diffusion import cosine_vp, linear_vp, respace
from diffaug_fast.diffusion.sampling import sample
from diffaug_fast.ops import available_backends
from diffaug_fast.ops.reference import noise_like

SHAPE = (3, 2, 5, 3)  # odd sizes; 30 features per example
CLASSES = 4
SCALE = 3.0
SEED = 11
SCHEDULES = {"linear": linear_vp(), "cosine": cosine_vp()}


def _fast_backends():
    """(device, backend) of each compiled / GPU backend (not Triton's CPU interpreter: ~0.5 s a step)."""
    pairs = [("cpu", b) for b in available_backends("cpu") if b not in ("reference", "triton")]
    if torch.cuda.is_available():
        pairs += [("cuda", b) for b in available_backends("cuda") if b != "reference"]
    return pairs


FAST = _fast_backends()
# Short chains on every backend; the full 1000-step chains (4 of them, 1000 model + guidance calls each, seconds
# apiece on a busy CPU) on the fast backends, marked slow.
CHAINS = ([("cpu", "reference", "ddim25")] + [(d, b, "ddim25") for d, b in FAST]
          + [pytest.param(d, b, None, marks=pytest.mark.slow) for d, b in FAST])
CHAIN_IDS = ["cpu-reference-ddim25"] + [f"{d}-{b}-ddim25" for d, b in FAST] + [f"{d}-{b}-full" for d, b in FAST]


_GEN = torch.Generator().manual_seed(3)
W = torch.randn(CLASSES, math.prod(SHAPE[1:]), generator=_GEN, dtype=torch.float64) * 0.3
B = torch.randn(CLASSES, generator=_GEN, dtype=torch.float64)


def _log_p_grad(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Closed-form ∇_x log p(y|x) of the linear-softmax classifier log p = w_y·x + b_y - logsumexp(Wx + b)."""
    w, b = W.to(x.device), B.to(x.device)
    flat = x.double().flatten(1)
    p = torch.softmax(flat @ w.T + b, -1)
    return (w[labels] - p @ w).view(x.shape)


LABELS = torch.tensor([0, 2, 3])


def _model_out(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A smooth toy eps-network with a learned-sigma output [B, 2C, ...]: eps in the first half; the second half
    is junk that DDIM must ignore. Large enough that clipping x0 is active over much of the chain."""
    x64 = x.double()
    tt = t.double().view(-1, *([1] * (x.dim() - 1)))
    eps = 1.5 * torch.sin(1.3 * x64 + tt / 250.0) + 0.2 * x64
    junk = 7.0 * torch.cos(5.0 * x64 + tt)
    return torch.cat([eps, junk], 1)


def guided_diffusion_ddim_step(x, eps, g, abar, abar_prev, eta, z, t_is_zero, clip=True):
    """One step of guided-diffusion's ddim_sample with cond_fn, float64; ``g`` is cond_fn's output (scale*grad)."""
    x, eps, g, z = (v.double() for v in (x, eps, g, z))
    sqrt_recip = math.sqrt(1.0 / abar)
    sqrt_recipm1 = math.sqrt(1.0 / abar - 1.0)
    x0 = sqrt_recip * x - sqrt_recipm1 * eps  # _predict_xstart_from_eps
    if clip:
        x0 = x0.clamp(-1, 1)
    # condition_score
    eps = (sqrt_recip * x - x0) / sqrt_recipm1  # _predict_eps_from_xstart
    eps = eps - math.sqrt(1.0 - abar) * g
    x0 = sqrt_recip * x - sqrt_recipm1 * eps
    # ddim_sample
    eps = (sqrt_recip * x - x0) / sqrt_recipm1
    sigma = eta * math.sqrt((1 - abar_prev) / (1 - abar)) * math.sqrt(1 - abar / abar_prev)
    mean = x0 * math.sqrt(abar_prev) + math.sqrt(1 - abar_prev - sigma**2) * eps
    return mean + (0.0 if t_is_zero else 1.0) * sigma * z


def run_and_compare(schedule_name: str, steps, eta: float, backend: str, device: str = "cpu"):
    """Run ``sample()`` (guided DDIM, learned-sigma output, clip on) and replay each of its steps through the
    float64 transcription from the x_t it saw, with the same noise. Returns per-step rows
    (grid index, timestep, max |ours - theirs|, max |theirs|) and the final samples of ours and of an independent
    float64 chain of the transcription."""
    base = SCHEDULES[schedule_name]
    chain = respace(base, steps) if steps is not None else base
    seen = []

    def model(x, t):
        seen.append((x.detach().clone(), t.clone()))
        return _model_out(x, t).to(x.dtype)

    def guidance(x, t):
        return _log_p_grad(x, LABELS.to(x.device)).to(torch.float32)

    numel = math.prod(SHAPE)
    ours = sample(model, SHAPE, chain, mode="ddim", eta=eta, learn_sigma=True, guidance=guidance, scale=SCALE,
                  clip=True, seed=SEED, device=device, progress=False, backend=backend)
    ab = chain.alphas_cumprod
    rows = []
    xs = [x for x, _ in seen] + [ours]
    x_ref = noise_like(torch.zeros(SHAPE), SEED, 0).double()  # x_T as sample() draws it
    for step, i in enumerate(range(len(chain) - 1, -1, -1)):
        x_t, t_model = xs[step].cpu(), seen[step][1].cpu()
        abar, abar_prev = float(ab[i]), (float(ab[i - 1]) if i > 0 else 1.0)
        z = noise_like(torch.zeros(SHAPE), SEED, numel * (step + 1)).double()
        theirs = guided_diffusion_ddim_step(x_t, _model_out(x_t, t_model)[:, :SHAPE[1]],
                                            SCALE * _log_p_grad(x_t, LABELS), abar, abar_prev, eta, z, i == 0)
        rows.append((i, int(t_model[0]), float((xs[step + 1].cpu().double() - theirs).abs().max()),
                     float(theirs.abs().max())))
        x_ref = guided_diffusion_ddim_step(x_ref, _model_out(x_ref, t_model)[:, :SHAPE[1]],
                                           SCALE * _log_p_grad(x_ref, LABELS), abar, abar_prev, eta, z, i == 0)
    return rows, ours.cpu().double(), x_ref


@pytest.mark.parametrize("device, backend, steps", CHAINS, ids=CHAIN_IDS)
@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("schedule_name", list(SCHEDULES))
def test_sample_equals_guided_diffusion_ddim_at_every_step(device, backend, schedule_name, steps, eta):
    rows, ours, chain_ref = run_and_compare(schedule_name, steps, eta, backend, device)
    assert len(rows) == (25 if steps else 1000)
    for i, t, diff, size in rows:
        # float32 against float64: relative to the step's own size (x0 reaches ~1e2 at cosine's t = 999)
        assert diff <= 2e-5 * max(1.0, size), f"grid index {i} (t = {t}): |ours - guided-diffusion| = {diff:.3g}"
    # the whole chain, run independently in float64, ends at the same samples (clipping keeps it stable)
    torch.testing.assert_close(ours, chain_ref, atol=1e-3, rtol=0)


def test_the_learned_sigma_half_and_clip_after_shift():
    """DDIM ignores the variance half; 'clip_after_shift' is the other (older) order, different when guided."""
    chain = respace(linear_vp(), "ddim10")

    def guidance(x, t):
        return _log_p_grad(x, LABELS).float()

    def run(junk_scale, **kw):
        def model(x, t):
            out = _model_out(x, t).float()
            out[:, SHAPE[1]:] *= junk_scale
            return out
        return sample(model, SHAPE, chain, mode="ddim", learn_sigma=True, guidance=guidance, scale=SCALE, seed=1,
                      progress=False, **kw)

    assert torch.equal(run(1.0), run(-3.0))
    assert not torch.allclose(run(1.0), run(1.0, ddim_guidance="clip_after_shift"), atol=1e-3)
    # unguided the two orders are the same step
    assert torch.equal(sample(lambda x, t: _model_out(x, t).float(), SHAPE, chain, learn_sigma=True, seed=1,
                              progress=False),
                       sample(lambda x, t: _model_out(x, t).float(), SHAPE, chain, learn_sigma=True, seed=1,
                              progress=False, ddim_guidance="clip_after_shift"))
