"""Is a DiffAug run bound by loading or by denoising? ImageNet-style JPEG loading (RandomResizedCrop(224) + flip for
the clean branch, Resize(256) + CenterCrop(224) for the DiffAug branch, as ``--preset imagenet``) with 1, 2 and 4
DataLoader workers, beside one DiffAug step (diffuse + denoise) through a UNet of the released 256x256
guided-diffusion configuration (random init: the speed does not depend on the weights) at 224 px.

Run:  python -m pytest benchmarks/test_bench_loader.py --benchmark-json=benchmarks/results/loader-<machine>.json
      python benchmarks/report_loader.py benchmarks/results/loader-<machine>.json
Every result carries ``images`` (per round) in extra_info; report_loader.py prints images/s side by side.
"""
from __future__ import annotations

import functools
import os

import numpy as np
import pytest
import torch
from PIL import Image

from diffaug_fast.augment import FastNet, diffuse_and_denoise
from diffaug_fast.data import folder_source
from diffaug_fast.train.step_data import StepImages, StepSpec, check_item, step_items

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
LOAD_BATCH = 64
LOAD_STEPS = 4 if DEVICE == "cpu" else 8
# guided-diffusion's 256x256 unconditional model (the flag line of its README)
FLAGS_256 = ("--attention_resolutions 32,16,8 --class_cond False --diffusion_steps 1000 --image_size 256 "
             "--learn_sigma True --noise_schedule linear --num_channels 256 --num_head_channels 64 --num_res_blocks 2 "
             "--resblock_updown True --use_fp16 True --use_scale_shift_norm True")
DENOISE_BATCH = 2 if DEVICE == "cpu" else 32


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory):
    """ImageNet-like JPEGs: 10 classes of about 400x350 photos-sized images (smooth content, quality 90)."""
    root = tmp_path_factory.mktemp("imagenet_like")
    rng = np.random.default_rng(0)
    for c in range(10):
        (root / f"n{c:08d}").mkdir()
        for i in range(LOAD_BATCH * LOAD_STEPS // 10 + 8):
            w, h = int(rng.integers(300, 500)), int(rng.integers(250, 450))
            small = rng.integers(0, 255, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
            im = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
            im.save(root / f"n{c:08d}" / f"{i:05d}.JPEG", "JPEG", quality=90)
    return root


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_loader_imagenet_views(benchmark, jpeg_folder, workers):
    source = folder_source(jpeg_folder, "train")
    spec = StepSpec(seed=0, batch=LOAD_BATCH, rank=0, world=1, images=len(source), image_size=224, channels=3,
                    crop="resized", diffaug_view="center")
    data = StepImages(source, spec)

    def load():
        for step, item in zip(range(LOAD_STEPS), step_items(data, 0, LOAD_STEPS, workers=workers,
                                                            pin_memory=DEVICE == "cuda")):
            check_item(item, step)

    benchmark.group = "loader vs DiffAug step"
    benchmark.extra_info.update(task=f"load (2 views, 224 px), {workers} workers", images=LOAD_BATCH * LOAD_STEPS,
                                workers=workers, cpus=os.cpu_count(), device="cpu")
    benchmark.pedantic(load, rounds=2, iterations=1, warmup_rounds=0)


@functools.lru_cache(maxsize=None)
def _denoiser_256():
    from diffaug_fast.diffusion.checkpoints import parse_flags, unet_from_flags
    from diffaug_fast.diffusion import Denoiser, get_schedule

    flags = parse_flags(FLAGS_256)
    flags["use_fp16"] = False  # precision is the FastNet's --amp business here
    torch.manual_seed(0)
    net = unet_from_flags(flags)
    return Denoiser(net, get_schedule("linear"), parametrization="eps", learn_sigma=True, clip=True).to(DEVICE).eval()


@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_diffaug_step_256_unet_at_224(benchmark, amp):
    if DEVICE == "cpu" and amp == "bf16":
        pytest.skip("the CPU number of the denoiser in bf16 belongs to the precision issue; fp32 shows the bound")
    den = _denoiser_256()
    net = FastNet(den, compile=False, amp=amp, device=torch.device(DEVICE))
    x = torch.rand(DENOISE_BATCH, 3, 224, 224, device=DEVICE) * 2 - 1
    t = torch.randint(0, 1000, (DENOISE_BATCH,), generator=torch.Generator().manual_seed(0))

    def step():
        with torch.no_grad():
            diffuse_and_denoise(den, x, t, seed=0, net=net)
        if DEVICE == "cuda":
            torch.cuda.synchronize()

    step()
    benchmark.group = "loader vs DiffAug step"
    benchmark.extra_info.update(task=f"DiffAug step, 256x256-config UNet at 224 px, amp {amp}", images=DENOISE_BATCH,
                                device=DEVICE)
    benchmark.pedantic(step, rounds=2 if DEVICE == "cpu" else 10, iterations=1, warmup_rounds=0)
