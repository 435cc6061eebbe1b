"""DiffAug (one forward-diffusion step + one denoising step) and DiffAug-Ensemble.

DiffAug replaces an image ``x0`` by the denoiser's estimate ``x0_hat(x_t, t)`` of it from a noisy
version ``x_t = a_t*x0 + s_t*eps``: the fused ``diffuse`` op draws the noise in-kernel, the frozen
network runs under ``inference_mode`` (optionally compiled, mixed precision, channels_last), and
the fused epilogue turns its output into ``x0_hat``. The ancestral step's posterior sample, which
DiffAug would throw away, is never computed.

Randomness is keyed, not stateful: image ``i`` of a call with ``(seed, offset)`` gets the Philox
noise at ``offset + i*numel(x0[i])``, so a batch split across processes (each shard with its own
offset) gives the same images as the whole batch in one process.
"""
from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn

from diffaug_fast import streams
from diffaug_fast.diffusion import Denoiser
from diffaug_fast.ops import denoise_epilogue, diffuse
from diffaug_fast.ops.backends import PRECISION_DTYPES, PRECISIONS, native_bf16, native_fp16, resolve_precision
from diffaug_fast.ops.compiling import repair_inductor_cache, stop_signals_deferred

DE_TIMESTEPS = tuple(range(0, 500, 50))  # the paper's DiffAug-Ensemble: t = 0, 50, ..., 450
AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def amp_dtype(amp: str | None, device: torch.device | str) -> torch.dtype | None:
    """Mixed-precision dtype for ``amp`` ('auto', 'off', 'bf16', 'fp16'); 'auto' = what the GPU computes natively
    (bf16 from sm_80, fp16 with loss scaling on sm_70 / sm_75, where bf16 is emulated), off elsewhere.

    (On the 2-core AVX-512 CPU bf16 autocast made the small UNet slower, see the README.)
    """
    if amp in (None, "auto"):
        device = torch.device(device)
        if device.type != "cuda":
            return None
        return torch.bfloat16 if native_bf16(device)[0] else torch.float16 if native_fp16(device)[0] else None
    if amp not in AMP_DTYPES:
        raise ValueError(f"argument 'amp' is {amp!r}; expected 'auto' or one of {', '.join(AMP_DTYPES)}")
    return AMP_DTYPES[amp]


def denoiser_dtype(precision: str | None, amp: str | None, device: torch.device | str) -> torch.dtype | None:
    """The frozen denoiser's autocast dtype: ``precision`` (fp32 | bf16 | fp16 | auto, see
    ``ops.backends.resolve_precision``), or, where it is None / 'amp', what ``amp`` gives (the behaviour before
    the precision setting existed)."""
    if precision in (None, "amp"):
        return amp_dtype(amp, device)
    if precision not in PRECISIONS:
        raise ValueError(f"argument 'precision' is {precision!r}; expected one of {', '.join(PRECISIONS)} "
                         "(or None: as 'amp')")
    return resolve_precision(precision, device)


def autocast(device: torch.device | str, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


class PrecisionNet(nn.Module):
    """``net`` run under autocast at ``dtype`` (None: as it is), its output back in float32: for callers that take
    a denoiser's network whole (sampling, the denoiser report)."""

    def __init__(self, net: nn.Module, dtype: torch.dtype | None):
        super().__init__()
        self.net, self.dtype = net, dtype

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        with autocast(x.device, self.dtype):
            return self.net(x, *args, **kwargs).float()


@contextlib.contextmanager
def at_precision(denoiser: Denoiser, precision: str):
    """``denoiser`` with its network at ``precision`` (fp32 | bf16 | fp16 | auto) inside the block."""
    dtype = resolve_precision(precision, _device_of(denoiser))
    if dtype is None:
        yield denoiser
        return
    net = denoiser.net
    denoiser.net = PrecisionNet(net, dtype)
    try:
        yield denoiser
    finally:
        denoiser.net = net


def sample_timesteps(n: int, t_min: int, t_max: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` DiffAug timesteps uniform on {t_min, ..., t_max} (CPU int64)."""
    return torch.randint(t_min, t_max + 1, (n,), generator=generator)


def partner_timesteps(t: torch.Tensor, radius: int, t_max: int, gen: torch.Generator) -> torch.Tensor:
    """Partner times for temporal consistency: t' = t + Δ, Δ uniform on {-radius, …, radius}, kept in [0, t_max]."""
    if radius < 0:
        raise ValueError(f"argument 'tc_radius' must be >= 0, got {radius}")
    delta = torch.randint(-radius, radius + 1, t.shape, generator=gen)
    return (t + delta.to(t.device)).clamp_(0, t_max)


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters(), torch.empty(0)).device


class FastNet:
    """The denoiser's network as DiffAug calls it: compiled on request, channels_last, autocast.

    Compiled with inductor's ``freezing`` (weights become constants, convolution weights are prepacked):
    the network is frozen and only ever run under ``inference_mode``. On the 2-core CPU that made the
    Fashion-MNIST UNet 1.17x (AMD EPYC) to 1.4-1.6x (Xeon) faster than eager; a new batch size costs a
    recompile (~10-25 s there).
    On CUDA a compiled network is also replayed as CUDA graphs (``cuda_graphs``, default on): a small network's
    launch overhead is most of its time on a large GPU (H200, the Fashion-MNIST UNet, batch 128, bf16: 5.8 ms
    compiled, 5.0 ms with graphs; benchmarks/results/precision-h200.md). The graphs' output buffers are reused by
    the next call, so a caller consumes each output before calling again (``diffuse_and_denoise`` does: the
    epilogue writes x̂0 to a new tensor). ``chunked(k)`` cuts larger batches into pieces of exactly that many images (the
    last one padded with blank images, cut off again): on a CPU the evaluation's 2 500-image DiffAug-Ensemble
    batches then reuse the training step's compiled graph instead of compiling another (about a minute, cold) and
    stay cache-sized. ``channels_last`` hands the network NHWC input (what oneDNN's and cuDNN's fast convolutions
    take). ``precision`` (fp32 | bf16 | fp16 | auto) sets its autocast dtype; None follows ``amp`` (see
    ``denoiser_dtype``).
    """

    def __init__(self, denoiser: Denoiser, *, compile: bool, amp: str | None = "auto", device,
                 precision: str | None = None, channels_last: bool = True, cuda_graphs: bool = True):
        self.denoiser, self.chunk = denoiser, None
        options = {"freezing": True}
        if compile and cuda_graphs and torch.device(device).type == "cuda":
            options["triton.cudagraphs"] = True
        if compile:  # an earlier compilation killed mid-link may have left a broken kernel in the cache
            repair_inductor_cache()
        self.net = torch.compile(denoiser.net, dynamic=False, options=options) if compile else denoiser.net
        self.compiled = bool(compile)
        self.channels_last = channels_last
        self.dtype = denoiser_dtype(precision, amp, device)

    @property
    def precision_name(self) -> str:
        """The dtype the network runs at, as ``--denoiser-precision`` names it (what ``auto`` resolved to)."""
        return next(name for name, dtype in PRECISION_DTYPES.items() if dtype == self.dtype)

    def chunked(self, chunk: int | None) -> "FastNet":
        """This network (the same compiled graphs) feeding pieces of ``chunk`` images."""
        if chunk is not None and (not isinstance(chunk, int) or chunk < 1):
            raise ValueError(f"argument 'chunk' must be a positive number of images or None, got {chunk!r}")
        twin = copy.copy(self)
        twin.chunk = chunk
        return twin

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.chunk is None or len(x_t) <= self.chunk:
            return self._forward(x_t, t)
        # pieces of exactly ``chunk`` images (the last one padded): one compiled graph serves every batch size
        pieces = []
        for start in range(0, len(x_t), self.chunk):
            xs, ts = x_t[start:start + self.chunk], t[start:start + self.chunk]
            short = self.chunk - len(xs)
            if short:
                xs = torch.cat([xs, xs.new_zeros((short, *xs.shape[1:]))])
                ts = torch.cat([ts, ts.new_zeros(short)])
            pieces.append(self._forward(xs, ts)[:self.chunk - short])
        return torch.cat(pieces)

    def _forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x_t.dim() == 4:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        # any call may compile (a new batch size, the evaluation's chunks): Ctrl-C / SIGTERM wait for the compiler
        with stop_signals_deferred() if self.compiled else contextlib.nullcontext(), autocast(x_t.device, self.dtype):
            return self.net(x_t, self.denoiser.conditioning(t))


def _check_images(denoiser: Denoiser, x0) -> None:
    """Clean images for the denoiser: a float [N, C, H, W] tensor of its image shape, finite."""
    if not torch.is_tensor(x0) or not x0.is_floating_point() or x0.dim() != 4:
        got = f"a {x0.dim()}-D {x0.dtype} tensor" if torch.is_tensor(x0) else type(x0).__name__
        raise ValueError(f"argument 'x0' must be a floating-point image batch [N, C, H, W], got {got}")
    problem = denoiser.shape_problem(x0.shape[1:])
    if problem is not None:
        raise ValueError(f"argument 'x0' has images of shape {list(x0.shape[1:])}; this denoiser works on "
                         f"{list(denoiser.image_shape)} ({problem})")
    if len(x0) and not bool(torch.isfinite(x0).all()):
        raise ValueError("argument 'x0' contains NaN or Inf")


def diffuse_and_denoise(denoiser: Denoiser, x0: torch.Tensor, t: torch.Tensor, *, seed: int, offset: int = 0,
                        net=None, max_batch: int | None = None, return_noisy: bool = False):
    """x0_hat(x_t, t) for ``x_t ~ q(x_t | x0)`` at per-example grid indices ``t``; a normal (grad-able) tensor.

    ``net`` is an optional faster callable ``net(x_t, t) -> model output`` (see :class:`DiffAug`);
    ``max_batch`` bounds how many images go through the network at once; ``return_noisy`` also returns
    x_t (as ``(x_t, x0_hat)``), which denoising-assisted classifiers see.
    """
    _check_images(denoiser, x0)
    if t.shape != (x0.shape[0],):
        raise ValueError(f"argument 't' must have shape [{x0.shape[0]}] (one timestep per image), "
                         f"got {list(t.shape)}")
    if len(x0) == 0:
        return (x0.clone(), x0.clone()) if return_noisy else x0.clone()
    run = net or (lambda x, tt: denoiser.model_output(x, tt))
    per_image = x0[0].numel() if len(x0) else 0
    chunk = max_batch or max(len(x0), 1)
    pieces, noisy = [], []
    with torch.inference_mode():
        for start in range(0, len(x0), chunk):
            xs, ts = x0[start:start + chunk], t[start:start + chunk].to(x0.device)
            a, s = denoiser.schedule.coefficients(ts, device=x0.device)
            x_t = diffuse(xs, a, s, seed=seed, offset=offset + start * per_image)
            out = run(x_t, ts)
            pieces.append(denoise_epilogue(x_t, out, a, s, parametrization=denoiser.parametrization,
                                           clip=denoiser.clip, learn_sigma=denoiser.learn_sigma))
            noisy.append(x_t)
        x0_hat = torch.cat(pieces) if len(pieces) != 1 else pieces[0]
        x_t = (torch.cat(noisy) if len(noisy) != 1 else noisy[0]) if return_noisy else None
    # leave inference mode (clone): the classifier saves its input for backward
    return (x_t.clone(), x0_hat.clone()) if return_noisy else x0_hat.clone()


class DiffAug(nn.Module):
    """The DiffAug augmentation: ``DiffAug(denoiser)(x0)`` returns x0_hat with t ~ U{t_min..t_max} per image.

    Deterministic under ``seed``: call k draws its timesteps from a generator seeded by (seed, k) and
    its noise from the Philox stream at a running offset; both counters are saved in ``state_dict``.
    ``precision`` (fp32 | bf16 | fp16 | auto: bf16 where the hardware computes it natively) is the denoiser's
    autocast dtype; the default None keeps the earlier behaviour, the dtype ``amp`` gives.
    """

    def __init__(self, denoiser: Denoiser, *, t_min: int = 0, t_max: int | None = None, seed: int = 0,
                 compile: bool = False, amp: str | None = "auto", max_batch: int | None = None,
                 precision: str | None = None):
        super().__init__()
        steps = len(denoiser.schedule)
        t_max = steps - 1 if t_max is None else t_max
        if not (isinstance(t_min, int) and isinstance(t_max, int) and 0 <= t_min <= t_max < steps):
            raise ValueError(f"DiffAug(): need integers 0 <= t_min <= t_max <= {steps - 1}, got t_min={t_min!r}, "
                             f"t_max={t_max!r}")
        self.denoiser = denoiser.eval().requires_grad_(False)
        self.t_min, self.t_max, self.seed, self.max_batch = t_min, t_max, int(seed), max_batch
        device = _device_of(denoiser)
        self.fast_net = FastNet(denoiser, compile=compile, amp=amp, device=device, precision=precision)
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))
        self.register_buffer("offset", torch.zeros((), dtype=torch.int64))

    def train(self, mode: bool = True):  # the denoiser stays in eval mode whatever the classifier does
        super().train(mode)
        self.denoiser.eval()
        return self

    def forward(self, x0: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        if t is None:
            gen = streams.generator(self.seed, "train_step", int(self.calls))
            t = sample_timesteps(len(x0), self.t_min, self.t_max, gen)
        out = diffuse_and_denoise(self.denoiser, x0, t, seed=self.seed, offset=int(self.offset), net=self.fast_net,
                                  max_batch=self.max_batch)
        self.calls += 1
        self.offset += x0.numel()
        return out


class DiffAugEnsemble(nn.Module):
    """Test-time DiffAug: average the classifier's softmax over x0_hat at several t (paper: 0, 50, ..., 450).

    All (image, t) pairs go through the denoiser and the classifier as one batch, cut into chunks of at
    most ``max_batch`` images to bound memory. ``precision`` is the denoiser's (as in :class:`DiffAug`); ``amp``
    the classifier's (and the denoiser's where ``precision`` is None).
    """

    def __init__(self, classifier: nn.Module, denoiser: Denoiser, timesteps=DE_TIMESTEPS, *, seed: int = 0,
                 max_batch: int = 1024, compile: bool = False, amp: str | None = "auto",
                 precision: str | None = None):
        super().__init__()
        timesteps = [int(t) for t in timesteps]
        if not timesteps or min(timesteps) < 0 or max(timesteps) >= len(denoiser.schedule):
            raise ValueError(f"DiffAugEnsemble(): argument 'timesteps' must be a non-empty list in "
                             f"[0, {len(denoiser.schedule) - 1}], got {timesteps}")
        self.classifier, self.denoiser = classifier, denoiser.eval().requires_grad_(False)
        self.timesteps, self.seed, self.max_batch = timesteps, int(seed), int(max_batch)
        device = _device_of(denoiser)
        self.fast_net = FastNet(denoiser, compile=compile, amp=amp, device=device, precision=precision)
        self.amp = amp_dtype(amp, device)

    @torch.inference_mode()
    def logits_per_t(self, x0: torch.Tensor, *, offset: int = 0) -> torch.Tensor:
        """The classifier's logits on x0_hat at each t: float32 [len(timesteps), B, classes]."""
        n = len(x0)
        ts = torch.tensor(self.timesteps).repeat_interleave(n)  # t-major: block k is t_k for every image
        xs = x0.repeat(len(self.timesteps), *([1] * (x0.dim() - 1)))
        logits = []
        for start in range(0, len(xs), self.max_batch):
            x_hat = diffuse_and_denoise(self.denoiser, xs[start:start + self.max_batch],
                                        ts[start:start + self.max_batch], seed=self.seed,
                                        offset=offset + start * x0[0].numel(), net=self.fast_net)
            with autocast(x0.device, self.amp):
                logits.append(self.classifier(x_hat).float())
        return torch.cat(logits).view(len(self.timesteps), n, -1)

    def probabilities_per_t(self, x0: torch.Tensor, *, offset: int = 0) -> torch.Tensor:
        """Softmax of the classifier on x0_hat at each t: float32 [len(timesteps), B, classes]."""
        return torch.softmax(self.logits_per_t(x0, offset=offset), dim=-1)

    def forward(self, x0: torch.Tensor, *, offset: int = 0) -> torch.Tensor:
        """Ensembled class probabilities [B, classes]."""
        return self.probabilities_per_t(x0, offset=offset).mean(0)
