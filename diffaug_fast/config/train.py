"""The options of ``diffaug-fast train``, by regime: data, model, optimisation, DiffAug, evaluation,
semi-supervised / positive-unlabeled, and how the run executes. ``PRESETS`` are partial configs."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from diffaug_fast.augment import DE_TIMESTEPS
from diffaug_fast.config.options import option, section
from diffaug_fast.data.cifar import cifar_source
from diffaug_fast.data import default_val_size
from diffaug_fast.data.subsets import check_val_size
from diffaug_fast.models.build import TIME_WIDTHS
from diffaug_fast.models.classifiers import CLASSIFIERS
from diffaug_fast.models.pretrained import check_init_path
from diffaug_fast.models.torchvision_models import close_matches, torchvision_names


@dataclass
class DataOptions:
    source: str = option("fmnist", "fmnist; cifar10:DIR or cifar100:DIR (the official python batches, DIR holding "
                         "them or cifar-10-batches-py / cifar-100-python); or a folder of your images with one "
                         "sub-folder per class (train/ and test/ inside are used if present, else every 10th image "
                         "is held out)", flag="--data")
    image_size: int | None = option(None, "the side the images are read at (folders and CIFAR are resized to it); "
                                    "auto: Fashion-MNIST 28, CIFAR 32, an image folder the --denoiser's size (without "
                                    "a denoiser: its first image's shorter side, a multiple of 4, at most 64)",
                                    check="positive", none="auto")
    channels: Literal[1, 3] | None = option(None, "1 grayscale or 3 RGB; auto: the data's own (Fashion-MNIST 1, "
                                            "CIFAR 3, an image folder its first image's)", none="auto")
    train_limit: int | None = option(None, "use only the first N training images (after the validation split is "
                                     "set aside)", check="positive", none="all")
    val_size: float | None = option(None, "validation images held out of the training images, never trained on: N "
                                    "images, a fraction in (0, 1), or 0 for none (every training image trains, as "
                                    "before this option); class-stratified, the same for every --seed (--split-seed "
                                    "fixes it). auto: 5000 of Fashion-MNIST's 60000, a tenth of CIFAR's "
                                    "(5000) and of an image folder's (a folder with train/ + val/ keeps val/ as its test set and carves this "
                                    "from train/). Runs report accuracy on it beside the test set's: choose on it",
                                    check="nonnegative", none="auto")
    split_seed: int = option(0, "seed of the validation split, not of the run: runs of a study share it whatever "
                             "their --seed", check="nonnegative")
    workers: int | None = option(None, "data-loading processes per training process (auto: up to 8 for image "
                                 "folders, 0 for the in-memory sets); they decode and augment ahead of the step",
                                 check="nonnegative", none="auto")
    crop: Literal["pad", "resized"] = option("pad", "training crop: pad: pad by 2, random crop back, flip (small "
                                             "images); resized: RandomResizedCrop to --image-size + flip (ImageNet; "
                                             "test images then get the centre view)")
    diffaug_view: Literal["same", "center"] = option("same", "the images the DiffAug branch diffuses and denoises: "
                                                     "the same crops as the clean branch, or resized to "
                                                     "--image-size*256/224 and centre-cropped (the official "
                                                     "ImageNet recipe)")


@dataclass
class ModelOptions:
    mode: Literal["clean", "noisy", "da"] = option(
        "clean", "clean: a classifier of images (DiffAug training); noisy: a time-conditioned classifier of x_t; "
        "da: denoising-assisted, sees x_t and the denoiser's x0_hat")
    arch: str = option("resnet-small", f"classifier: {' | '.join(CLASSIFIERS)} or any torchvision.models "
                       f"classifier (resnet50, vit_b_16, convnext_tiny, ...) (noisy / da: {' | '.join(TIME_WIDTHS)})",
                       flag="--model")
    norm: Literal["batch", "group"] = option("batch", "normalisation layers of our classifiers (torchvision models "
                                             "keep their own)")
    fusion: Literal["input", "feature"] = option("input", "DA classifier: channel concat of x_t and x0_hat, or "
                                                 "time-gated feature fusion")
    init: str | None = option(None, "pretrained weights loaded before training: a .pth / .pt state dict (read with "
                              "weights_only) or .safetensors; a head of another class count is re-initialised",
                              none="none", metavar="FILE")


@dataclass
class OptimOptions:
    epochs: int = option(1, "passes over the training images; fixed for a run (the LR schedule spans them)",
                         check="positive")
    max_steps: int | None = option(None, "train for exactly N steps instead of --epochs passes (the learning-rate "
                                   "schedule spans the N steps; the images keep coming in epochs): a smoke run or a "
                                   "fixed compute budget", check="positive", none="off")
    batch_size: int = option(128, "global batch, split over the data-parallel processes", check="positive")
    optimizer: Literal["sgd", "adamw"] = option("sgd", "SGD (momentum 0.9) or AdamW")
    nesterov: bool = option(True, "SGD: Nesterov momentum (off: plain momentum, as torchvision's ImageNet recipe)")
    lr: float = option(0.05, "peak learning rate", check="positive")
    weight_decay: float = option(5e-4, "weight decay", check="nonnegative")
    lr_schedule: Literal["cosine", "step", "constant"] = option("cosine", "learning-rate schedule after warm-up "
                                                               "(step: x0.1 at 50% and 75%, or see --lr-step-epochs)")
    lr_step_epochs: int | None = option(None, "--lr-schedule step: x0.1 every N epochs instead (ImageNet: 30)",
                                        check="positive", none="off")
    warmup_steps: int = option(50, "linear warm-up steps", check="nonnegative")
    ema_decay: float = option(0.0, "EMA decay of the classifier weights (0 = no EMA)", flag="--ema", check="decay",
                             alias="ema_decay")


@dataclass
class DiffAugOptions:
    mode: Literal["on", "off", "only"] = option("on", "on: clean + DiffAug images; off: the baseline; only: "
                                                "DiffAug images alone", flag="--diffaug")
    fraction: float = option(1.0, "--diffaug on: share of each batch that also gets a DiffAug copy (the first "
                             "round(F x --batch-size) images; every image, clean or DiffAug, weighs 1 / --batch-size in the "
                             "loss, as with F = 1): 1 = every image, as the paper; less buys more epochs in the same time "
                             "(off / only and noisy / DA classifiers ignore it)", flag="--diffaug-fraction",
                             check="fraction")
    until: float = option(1.0, "--diffaug on: share of the training steps that get DiffAug copies; the last (1 - U) "
                          "of the steps train on the clean images alone, at the schedule's low learning rates "
                          "(1 = every step, as the paper; off / only and noisy / DA classifiers ignore it)", flag="--diffaug-until",
                          check="fraction", metavar="U")
    weight: float = option(1.0, "--diffaug on: weight of each DiffAug copy's cross-entropy against a clean image's "
                           "(1 = the paper's CE(clean) + CE(DiffAug)); below 1 leans the classifier towards the "
                           "clean images; at most 100: past that the clean images no longer count and W only scales "
                           "the learning rate (--diffaug only trains on DiffAug images alone) (off / only and noisy / "
                           "DA classifiers ignore it)", flag="--diffaug-weight", check="loss_weight", metavar="W")
    augmix: bool = option(False, "AugMix: with --jsd 0 it replaces the clean image (DiffAug copies then start from "
                          "the AugMix image); with --jsd > 0 the official recipe: two AugMix views beside the clean "
                          "image, DiffAug copies from the un-augmented one")
    jsd: float = option(0.0, "with --augmix: weight of the Jensen-Shannon consistency between the clean image and its "
                        "two AugMix views (AugMix's and the official diffaugmix recipe's: 12; --preset diffaugmix); "
                        "the views get no cross-entropy of their own", check="nonnegative")
    t_min: int = option(0, "smallest DiffAug timestep", check="nonnegative")
    t_max: int | None = option(None, "largest DiffAug timestep", check="nonnegative", none="last")
    denoiser: str = option("fmnist", "fmnist | fmnist-v | fmnist-ve | path/to/ema.safetensors (train-denoiser export) | a "
                           "released guided-/improved-diffusion .pt or .safetensors (with --denoiser-flags) | a "
                           "diffusers folder")
    denoiser_flags: str | None = option(None, "the flag line a released --denoiser checkpoint was trained with, "
                                        "model and diffusion flags (\"--image_size 256 --num_channels 256 ... "
                                        "--diffusion_steps 1000 --noise_schedule linear\"), or a JSON file of them")
    denoiser_precision: Literal["auto", "fp32", "bf16", "fp16", "amp"] = option(
        "auto", "precision of the frozen denoiser's forward (DiffAug, noisy / DA inputs, the evaluation): auto = bf16 "
        "where the hardware computes it natively (CPUs with avx512_bf16 or AMX, CUDA sm_80+; `diffaug-fast info` "
        "says), else fp32; amp = as --amp (what runs written before this option used)")


@dataclass
class EvalOptions:
    limit: int | None = option(1000, "test images for the DiffAug-Ensemble / per-t / noisy evaluation",
                               flag="--eval-limit", check="positive", none="all")
    de_timesteps: list[int] = option(help="DiffAug-Ensemble timesteps (empty: no ensemble)",
                                     factory=lambda: list(DE_TIMESTEPS), metavar="T,T,...")
    noise_std: float = option(0.4, "Gaussian noise (pixel units in [-1, 1]) of the noisy test set",
                              check="nonnegative")
    noise_draws: int = option(3, "noise draws of the noisy accuracy on the whole test set and validation split "
                              "(their mean is reported, each draw beside it)", check="positive")
    de_denoiser: str | None = option(None, "the denoiser of a clean classifier's DiffAug-Ensemble: a shipped name, "
                                     "a train-denoiser export (.safetensors + .json) or a diffusers folder (default: "
                                     "--denoiser); with --evaluate-only, re-evaluates a run with another denoiser")


@dataclass
class SemiOptions:
    ssl: bool = option(False, "keep only --labels-per-class labels per class; the rest is unlabeled and trained "
                       "with the temporal-consistency loss (needs --mode noisy|da)")
    pu: bool = option(False, "positive-unlabeled: --labels-per-class labeled images of each --positive class, the "
                      "rest unlabeled; nnPU risk + temporal consistency")
    labels_per_class: int = option(100, "labeled images per class (pu: per positive class)", check="positive")
    consistency: bool = option(True, "the temporal-consistency term on unlabeled images (off: labeled-only / "
                               "nnPU-only baseline)")
    tc_radius: int = option(50, "partner time t' = t + U{-R..R}", check="nonnegative")
    tc_noise: Literal["same", "fresh"] = option("same", "x_t and x_t' share their noise or not")
    tc_target: Literal["lower", "higher", "both"] = option("lower", "the detached side: the prediction at the "
                                                           "lower t, the higher t, or both directions")
    tc_weight: float = option(1.0, "weight of the consistency term", check="nonnegative")
    tc_rampup: int = option(200, "steps of sigmoid ramp-up of the consistency weight", check="nonnegative")
    tc_threshold: float = option(0.0, "skip pairs whose target's top probability is below this", check="unit")
    positive: list[int] = option(help="--pu: the classes that make up 'positive', e.g. 0,2,4",
                                 factory=list, metavar="K,K,...")
    prior: float | None = option(None, "--pu: P(positive)", check="open_unit", none="true")
    pu_loss: Literal["logistic", "sigmoid"] = option("logistic", "--pu: nnPU's margin loss")


@dataclass
class RunOptions:
    seed: int = option(0, "seed of every random stream of the run", check="nonnegative")
    device: str = option("auto", "auto, cpu, cuda, cuda:1, ...")
    amp: Literal["auto", "off", "bf16", "fp16"] = option("auto", "mixed precision of the classifier (auto: bf16 on "
                                                         "GPUs from sm_80, fp16 on sm_70 / sm_75, off on CPU)")
    compile: Literal["auto", "on", "off"] = option("auto", "torch.compile: auto = the denoiser always, the "
                                                   "classifier on CUDA only")
    checkpoint_every: int = option(100, "steps between checkpoints", check="positive")
    log_every: int = option(10, "steps between metrics.jsonl lines", check="positive")


@dataclass
class TrainConfig:
    data: DataOptions = section(DataOptions)
    model: ModelOptions = section(ModelOptions)
    optim: OptimOptions = section(OptimOptions)
    diffaug: DiffAugOptions = section(DiffAugOptions)
    eval: EvalOptions = section(EvalOptions)
    semi: SemiOptions = section(SemiOptions)
    run: RunOptions = section(RunOptions)

    def validate(self) -> None:
        """Checks across options (each option's own type and range are checked by config.options)."""
        m, s = self.model, self.semi
        if m.mode == "clean" and m.arch not in CLASSIFIERS:
            if m.arch not in torchvision_names():
                raise ValueError(f"argument --model is {m.arch!r}, neither ours nor torchvision's; "
                                 f"{close_matches(m.arch, CLASSIFIERS)}")
            if m.norm != "batch":
                raise ValueError(f"argument --norm {m.norm} is for our classifiers ({', '.join(CLASSIFIERS)}); "
                                 f"torchvision's {m.arch} keeps its own normalisation layers")
        if m.init is not None:
            check_init_path(m.init)
        if self.optim.lr_step_epochs is not None and self.optim.lr_schedule != "step":
            raise ValueError(f"argument --lr-step-epochs needs --lr-schedule step, got {self.optim.lr_schedule}")
        if m.mode != "clean" and m.arch not in TIME_WIDTHS:
            raise ValueError(f"argument --model is {m.arch!r}; --mode {m.mode} builds a time-conditioned ResNet: "
                             f"expected one of {', '.join(TIME_WIDTHS)}")
        cifar = cifar_source(self.data.source)  # ValueError for an unknown cifar...: prefix
        if cifar is not None and not cifar[1].is_dir():
            raise FileNotFoundError(f"argument --data is {self.data.source!r}: {cifar[1]} is not a folder (expected "
                                    "the official python batches, or the folder holding them)")
        if cifar is None and self.data.source != "fmnist" and not Path(self.data.source).is_dir():
            raise FileNotFoundError(f"argument --data is {self.data.source!r}; expected 'fmnist', cifar10:DIR / "
                                    "cifar100:DIR, or a folder of images with one sub-folder per class")
        if self.diffaug.jsd and not self.diffaug.augmix:
            raise ValueError(f"argument --jsd {self.diffaug.jsd} is AugMix's consistency term: add --augmix")
        if self.diffaug.jsd and self.diffaug.mode == "only":
            raise ValueError("argument --jsd compares the clean image with its AugMix views; --diffaug only trains "
                             "without the clean image: use --diffaug on or off")
        if self.diffaug.jsd and (m.mode != "clean" or self.semi_supervised):
            raise ValueError(f"argument --jsd is for clean classifiers (--mode clean), got --mode {m.mode}"
                             f"{' with --ssl / --pu' if self.semi_supervised else ''}")
        if self.data.val_size is None:  # auto: recorded as the number it stands for, so a run says what it held out
            self.data.val_size = default_val_size(self.data.source)
        check_val_size(self.data.val_size)  # against the data's size when the data is read
        t_max = self.diffaug.t_max
        if t_max is not None and self.diffaug.t_min > t_max:
            raise ValueError(f"need --t-min <= --t-max, got {self.diffaug.t_min} > {t_max}")
        if self.eval.de_denoiser is not None and m.mode != "clean":
            raise ValueError(f"argument --de-denoiser sets a clean classifier's DiffAug-Ensemble; a --mode {m.mode} "
                             "classifier is evaluated with its own --denoiser")
        if any(t < 0 for t in self.eval.de_timesteps):
            raise ValueError(f"argument --de-timesteps must hold timesteps >= 0, got {self.eval.de_timesteps}")
        if s.ssl and s.pu:
            raise ValueError("choose one of --ssl (few labels per class) and --pu (positive-unlabeled)")
        if (s.ssl or s.pu) and m.mode == "clean":
            raise ValueError(f"{'--pu' if s.pu else '--ssl'} trains a noisy or DA classifier: add --mode noisy or "
                             "--mode da")
        if s.pu and (not s.positive or len(set(s.positive)) != len(s.positive) or min(s.positive) < 0):
            raise ValueError(f"--pu needs --positive: distinct class indices >= 0, got {s.positive!r}")

    def total_steps(self, train_images: int) -> int:
        """The run's optimizer steps: --max-steps, else --epochs passes of --batch-size over ``train_images``."""
        return self.optim.max_steps or train_images // self.optim.batch_size * self.optim.epochs

    @property
    def semi_supervised(self) -> bool:
        return self.semi.ssl or self.semi.pu


# Options that may differ when a run is resumed or re-evaluated: they do not change what is trained.
NOT_IDENTITY = ("eval", "run.checkpoint_every", "run.log_every", "run.device", "run.compile", "data.workers")

PRESETS = {
    # `diffaug-fast train`: about 10 minutes on 2 CPU cores (docs/results/main_job): the 78 k-parameter ResNet, four
    # epochs, DiffAug copies of the first 16 of each 128 images (the denoiser costs ~5x a classifier step per image),
    # each copy weighing 1/4 of a clean image in the loss (at weight 1 DiffAug cost about half a point of clean accuracy).
    "default": {"epochs": 4, "diffaug_fraction": 0.125, "diffaug_weight": 0.25},
    # The official AugMix + DiffAug recipe (the DiffAug authors' diffaugmix script) on the default budget: CE on the
    # clean image and its DiffAug copy, Jensen-Shannon consistency (weight 12) with two AugMix views.
    "diffaugmix": {"epochs": 4, "diffaug_fraction": 0.125, "augmix": True, "jsd": 12.0},
    # The bare option defaults: one epoch with a DiffAug copy of every image (~9 minutes; the earlier default).
    "quick": {},
    # The paper's recipe scaled to Fashion-MNIST: a WRN-16-4, 30 epochs, SGD + cosine, EMA.
    "paper": {"model": "wrn-16-4", "epochs": 30, "lr": 0.1, "ema": 0.999, "eval_limit": None},
    # The official DiffAug ImageNet recipe (docs/guides/imagenet.md puts it beside the official script): ResNet-50,
    # RandomResizedCrop(224) + flip for the clean branch, Resize(256) + CenterCrop(224) for the DiffAug branch,
    # SGD 0.1 / momentum 0.9 / wd 1e-4, global batch 256, x0.1 every 30 epochs, 90 epochs. Needs --data and the
    # 256x256 guided-diffusion model (--denoiser PATH --denoiser-flags "...").
    "imagenet": {"model": "resnet50", "image_size": 224, "channels": 3, "crop": "resized", "diffaug_view": "center",
                 "epochs": 90, "batch_size": 256, "optimizer": "sgd", "lr": 0.1, "nesterov": False,
                 "weight_decay": 1e-4, "lr_schedule": "step", "lr_step_epochs": 30, "warmup_steps": 0},
}
