"""The frozen denoiser at each precision, side by side with the official DiffAug pattern on the same weights.

The official pattern is guided-diffusion's own code: its ``UNetModel`` with the embedded Fashion-MNIST weights
loaded strictly, and ``GaussianDiffusion.q_sample`` + ``p_sample`` keeping ``pred_xstart`` (eager fp32, and the
same network under ``torch.compile``). Ours is ``diffuse_and_denoise`` through ``FastNet`` at each precision,
eager and compiled, with and without channels_last. Three tasks: DiffAug augmentation, DiffAug-Ensemble (10 t's,
against one official call per t) and a DiffAug training step; plus a matmul yardstick per precision, so that
``report_precision.py`` can give each row its achieved GFLOP/s (counted by ``torch.utils.flop_counter``) as a share
of this machine's matmul rate at the same precision, measured in the same run.

Needs guided-diffusion importable: set GUIDED_DIFFUSION to a checkout (the folder holding ``guided_diffusion/``),
or unpack one into benchmarks/third_party/ (git-ignored):
    git clone https://github.com/openai/guided-diffusion /tmp/gd && cp -r /tmp/gd/guided_diffusion benchmarks/third_party/
Run:  python -m pytest benchmarks/test_bench_precision.py --benchmark-json=benchmarks/results/precision-<machine>.json
      python benchmarks/report_precision.py benchmarks/results/precision-<machine>.json
"""
from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from common import DEVICE, denoiser, sync, timesteps, train_images
from diffaug_fast.augment import DiffAugEnsemble, FastNet, autocast, diffuse_and_denoise
from diffaug_fast.models.classifiers import build_classifier
from diffaug_fast.ops.backends import native_precision
from diffaug_fast.runs.weights import WEIGHTS_DIR

sys.path.insert(0, os.environ.get("GUIDED_DIFFUSION", str(Path(__file__).parent / "third_party")))
gd_unet = pytest.importorskip("guided_diffusion.unet", reason="guided-diffusion is not importable (see docstring)")
gd_diffusion = pytest.importorskip("guided_diffusion.gaussian_diffusion")

BATCH, DE_IMAGES = 128, 64
DE_TS = list(range(0, 500, 50))
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# a compiled variant per device: CUDA graphs only mean something on CUDA
COMPILED = ("compiled", "graphs") if DEVICE == "cuda" else ("compiled",)



@pytest.fixture(autouse=True)
def _fresh_compiler_caches():
    """Each row compiles its own graphs: dynamo's per-code caches (and their recompile limit) carry nothing over
    from the rows before it (with them kept, one CPU row once ran 2.7x slower than alone)."""
    torch._dynamo.reset()
    yield


def _emulated(precision):
    """bf16 / fp16 where the hardware has no native support (bf16 on an AVX2 CPU, fp16 on an avx512_bf16 one):
    5-25x slower than fp32 there, so such rows are timed over one round (their slowness, not their spread, is the
    finding)."""
    return not native_precision(precision, DEVICE)


def _run(benchmark, fn, *, rounds, images, group, impl, precision, flops, official=None, emulated=False):
    fn()  # warm up (and compile)
    sync()
    warmup = 1
    if emulated:
        rounds, warmup = 1, 0
    benchmark.group = group
    benchmark.extra_info.update(task=group, impl=impl, images=images, precision=precision, flops=flops,
                                official=official, device=DEVICE, emulated=emulated,
                                gpu=torch.cuda.get_device_name() if DEVICE == "cuda" else None)

    def call():
        fn()
        sync()

    benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=warmup)





@functools.lru_cache(maxsize=None)
def _official():
    """guided-diffusion's UNetModel holding the embedded weights (strict load) and its GaussianDiffusion."""
    den = denoiser()
    unet = json.loads((WEIGHTS_DIR / "fmnist_vp.json").read_text())["unet"]
    size = unet["image_size"]
    model = gd_unet.UNetModel(
        image_size=size, in_channels=unet["in_channels"], model_channels=unet["num_channels"],
        out_channels=unet["in_channels"], num_res_blocks=unet["num_res_blocks"],
        attention_resolutions=tuple(size // int(r) for r in str(unet["attention_resolutions"]).split(",")),
        dropout=unet["dropout"], channel_mult=tuple(unet["channel_mult"]),
        num_head_channels=unet["num_head_channels"], use_scale_shift_norm=unet["use_scale_shift_norm"])
    model.load_state_dict(den.net.state_dict(), strict=True)
    model = model.to(DEVICE).eval().requires_grad_(False)
    diffusion = gd_diffusion.GaussianDiffusion(
        betas=gd_diffusion.get_named_beta_schedule("linear", 1000),
        model_mean_type=gd_diffusion.ModelMeanType.EPSILON,
        model_var_type=gd_diffusion.ModelVarType.FIXED_SMALL, loss_type=gd_diffusion.LossType.MSE)
    return model, diffusion


def _official_diffaug(model, diffusion, x0, t):
    """The official DiffAug step: x_t = q_sample(x0, t), then p_sample's pred_xstart (its sample is discarded)."""
    with torch.no_grad():
        x_t = diffusion.q_sample(x0, t)
        return diffusion.p_sample(model, x_t, t, clip_denoised=True)["pred_xstart"]


@functools.lru_cache(maxsize=None)
def _compiled_official():
    model, diffusion = _official()
    return torch.compile(model), diffusion


def _forward_flops(n):
    """FLOPs of one denoiser forward over n images (convolutions, matmuls, attention)."""
    den = denoiser()
    x = torch.zeros(n, *den.image_shape, device=DEVICE)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        den.net(x, den.conditioning(torch.zeros(n, dtype=torch.long, device=DEVICE)))
    return counter.get_total_flops()


def _ours(precision, variant):
    """FastNet for a row name's variant: eager | compiled | graphs, optionally '_contiguous'."""
    mode = variant.removesuffix("_contiguous")
    return FastNet(denoiser(), compile=mode != "eager", cuda_graphs=mode == "graphs", precision=precision,
                   device=DEVICE, channels_last=not variant.endswith("_contiguous"))


# ---------------------------------------------------------------------------------------------------------------
# The yardstick: this machine's matmul rate at each precision.

MATMUL_N = 8192 if DEVICE == "cuda" else 1024


@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_matmul_rate(benchmark, precision):
    dtype = PRECISIONS[precision] or torch.float32
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    a = torch.randn(MATMUL_N, MATMUL_N, device=DEVICE, generator=gen).to(dtype)
    b = torch.randn(MATMUL_N, MATMUL_N, device=DEVICE, generator=gen).to(dtype)
    out = torch.empty(MATMUL_N, MATMUL_N, device=DEVICE, dtype=dtype)
    _run(benchmark, functools.partial(torch.mm, a, b, out=out), rounds=10, images=0,
         group=f"matmul {MATMUL_N}x{MATMUL_N}x{MATMUL_N}", impl=f"matmul_{precision}", precision=precision,
         flops=2 * MATMUL_N**3, emulated=_emulated(precision))


# ---------------------------------------------------------------------------------------------------------------
# DiffAug augmentation of one batch.

AUG_ROWS = (["official_eager_fp32", "official_compiled_fp32"]
            + [f"ours_{p}_{v}" for p in PRECISIONS for v in ("eager", *COMPILED)]
            + ["ours_fp32_eager_contiguous", "ours_fp32_compiled_contiguous"])


@pytest.mark.parametrize("impl", AUG_ROWS)
def test_diffaug_augmentation(benchmark, impl):
    x0, t = train_images(BATCH), timesteps(BATCH)
    if impl.startswith("official"):
        model, diffusion = _compiled_official() if "compiled" in impl else _official()
        fn, precision = functools.partial(_official_diffaug, model, diffusion, x0, t), "fp32"
    else:
        _, precision, variant = impl.split("_", 2)
        fn = functools.partial(diffuse_and_denoise, denoiser(), x0, t, seed=0, net=_ours(precision, variant))
    _run(benchmark, fn, rounds=5, images=BATCH, group=f"DiffAug augmentation, batch {BATCH}", impl=impl,
         precision=precision, flops=_forward_flops(BATCH), official=impl.startswith("official"),
         emulated=_emulated(precision))


# ---------------------------------------------------------------------------------------------------------------
# DiffAug-Ensemble: 10 t's. Official: one q_sample + p_sample call per t, classifier per t; ours: one batched pass.

@functools.lru_cache(maxsize=None)
def _classifier():
    torch.manual_seed(0)
    return build_classifier("resnet-small").to(DEVICE).eval()


def _classifier_flops(n, *, backward=False):
    clf = _classifier()
    x = torch.zeros(n, *denoiser().image_shape, device=DEVICE, requires_grad=False)
    with FlopCounterMode(display=False) as counter:
        if backward:
            clf.train()
            clf(x).sum().backward()
            clf.zero_grad(set_to_none=True)
            clf.eval()
        else:
            with torch.no_grad():
                clf(x)
    return counter.get_total_flops()


DE_ROWS = (["official_eager_fp32", "official_compiled_fp32"]
           + [f"ours_{p}_{v}" for p in PRECISIONS for v in COMPILED])


@pytest.mark.parametrize("impl", DE_ROWS)
def test_diffaug_ensemble(benchmark, impl):
    x0, clf, n = train_images(DE_IMAGES), _classifier(), DE_IMAGES
    if impl.startswith("official"):
        model, diffusion = _compiled_official() if "compiled" in impl else _official()
        precision = "fp32"

        def fn():
            with torch.no_grad():
                probs = sum(torch.softmax(clf(_official_diffaug(model, diffusion, x0,
                                                                torch.full((n,), t, device=DEVICE))), -1)
                            for t in DE_TS)
            return probs / len(DE_TS)
    else:
        _, precision, variant = impl.split("_", 2)
        de = DiffAugEnsemble(clf, denoiser(), DE_TS, max_batch=n * len(DE_TS), amp="off", precision=precision)
        de.fast_net = _ours(precision, variant)
        fn = functools.partial(de, x0)
    flops = _forward_flops(n * len(DE_TS)) + _classifier_flops(n * len(DE_TS))
    _run(benchmark, fn, rounds=3, images=n, group=f"DiffAug-Ensemble, {n} images x {len(DE_TS)} t", impl=impl,
         precision=precision, flops=flops, official=impl.startswith("official"), emulated=_emulated(precision))


# ---------------------------------------------------------------------------------------------------------------
# One DiffAug training step: augment a batch, forward + backward over clean + DiffAug images, SGD step.

TRAIN_ROWS = (["official_eager_fp32"]
              + [f"ours_{p}_{COMPILED[-1]}_classifier_{c}" for p in ("fp32", "bf16") for c in ("fp32", "bf16")])


def _train_step(impl):
    torch.manual_seed(0)
    clf = build_classifier("resnet-small").to(DEVICE)
    opt = torch.optim.SGD(clf.parameters(), lr=0.01, momentum=0.9)
    x0, t = train_images(BATCH), timesteps(BATCH)
    y = torch.zeros(2 * BATCH, dtype=torch.long, device=DEVICE)
    if impl.startswith("official"):
        model, diffusion = _official()
        augment, clf_dtype = functools.partial(_official_diffaug, model, diffusion, x0, t), None
    else:
        _, precision, variant, _, clf_precision = impl.split("_")
        net = _ours(precision, variant)
        augment = functools.partial(diffuse_and_denoise, denoiser(), x0, t, seed=0, net=net)
        clf, clf_dtype = clf.to(memory_format=torch.channels_last), PRECISIONS[clf_precision]

    def step():
        x = torch.cat([x0, augment()])
        with autocast(DEVICE, clf_dtype):
            loss = torch.nn.functional.cross_entropy(clf(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


@pytest.mark.parametrize("impl", TRAIN_ROWS)
def test_diffaug_train_step(benchmark, impl):
    precision = "fp32" if impl.startswith("official") else impl.split("_")[1]
    flops = _forward_flops(BATCH) + _classifier_flops(2 * BATCH, backward=True)
    _run(benchmark, _train_step(impl), rounds=5, images=BATCH,
         group=f"DiffAug training step, batch {BATCH} (+{BATCH} DiffAug)", impl=impl, precision=precision,
         flops=flops, official=impl.startswith("official"),
         emulated=_emulated(precision) or (impl.endswith("bf16") and _emulated("bf16")))
