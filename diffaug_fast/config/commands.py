"""The options of every command other than ``train``'s training config: the denoiser trainer, the robustness
suite, sampling, fidelity, gradients, the forward-process picture, the denoiser report, and the train
command's own (where the run goes, resuming, processes)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from diffaug_fast.config.options import option

SUITES = ("corruptions", "ood", "certify")
PRECISION_HELP = ("precision of the denoiser's forward: fp32, bf16, fp16, or auto = bf16 where the hardware computes "
                  "it natively (CPUs with avx512_bf16 or AMX, CUDA sm_80+; `diffaug-fast info` says), else fp32")
DEVICE_HELP = "where the networks run: auto (this process's GPU, else the CPU), cpu, cuda, cuda:1, ..."


@dataclass
class TrainCommand:
    """How ``diffaug-fast train`` runs: not part of the run's identity, never saved with it."""
    preset: Literal["default", "quick", "diffaugmix", "paper", "imagenet"] = option(
        "default", "a partial config that flags and --config override: default (4 epochs, DiffAug on 1/8 of each "
        "batch, each copy weighing 1/4 in the loss: about 10 min on 2 CPU cores), quick (1 epoch, DiffAug on every "
        "image), diffaugmix (4 epochs, DiffAug on 1/8, AugMix with its Jensen-Shannon term: the official recipe's "
        "loss), paper (WRN-16-4, 30 epochs), "
        "imagenet (the official ResNet-50 recipe)")
    config: str | None = option(None, "a JSON config (e.g. another run's config.json); flags override it")
    out: str = option("runs/train", "the run folder")
    resume: bool = option(False, "continue the run in --out from its checkpoint, with its own settings (those of "
                          "--preset / --config when given); flags may change how it runs (--device, --compile, "
                          "evaluation), not what it trains")
    evaluate_only: bool = option(False, "re-evaluate the finished run in --out with the evaluation options given "
                                 "now (the others: the run's own); its training state is not touched")
    nproc: int = option(1, "data-parallel processes on this machine", check="positive")
    compare: str | None = option(None, "another finished run folder (e.g. the baseline) for the report")


@dataclass
class DenoiserConfig:
    kind: Literal["vp", "ve"] = option("vp", "vp: DDPM schedule, network output per --parametrization; ve: "
                                       "EDM-preconditioned score network")
    parametrization: Literal["auto", "eps", "v", "x0"] = option(
        "auto", "VP: what the network predicts, with its loss: eps (eps-MSE), v (v-MSE), x0 (x0-MSE weighted by "
        "max(SNR, 1)); auto: v for a new VP run, the run's own when resuming (eps for runs written before the "
        "option); --kind ve takes auto only")
    data: str = option("fmnist", "fmnist, cifar10:DIR / cifar100:DIR, or a folder of your images (one sub-folder "
                       "per class)")
    image_size: int | None = option(None, "the side the images are read at (a multiple of 4, >= 8); auto: the "
                                    "data's own (Fashion-MNIST 28, CIFAR 32, an image folder its first image's "
                                    "shorter side, a multiple of 4, at most 64)", check="positive", none="auto")
    channels: Literal[1, 3] | None = option(None, "1: grayscale, 3: RGB; auto: the data's own (an image folder: its "
                                            "first image's)", none="auto")
    schedule: Literal["linear", "cosine"] = option("linear", "VP noise schedule (VE uses its geometric sigma grid)")
    sigma_min: float = option(0.01, "VE: smallest sigma", check="positive")
    sigma_max: float = option(50.0, "VE: largest sigma", check="positive")
    sigma_data: float = option(0.5, "VE preconditioning: the data's pixel std (Fashion-MNIST in [-1, 1]: 0.59)",
                               check="positive")
    steps: int = option(2500, "training steps", check="positive")
    batch_size: int = option(128, "images per step", check="positive")
    lr: float = option(2e-3, "AdamW learning rate", check="positive")
    ema_decay: float | None = option(None, "EMA decay of the exported weights (auto: min(0.999, 1 - 10 / --steps), "
                                     "so a short run's EMA is not mostly its random start)", check="decay",
                                     none="auto")
    warmup: int | None = option(None, "linear learning-rate warm-up steps (auto: min(200, --steps / 10))",
                                flag="--warmup-steps", check="positive", none="auto")
    seed: int = option(0, "seed of the run's random streams", check="nonnegative")
    checkpoint_every: int = option(100, "steps between checkpoints", check="positive")
    snapshot_every: int | None = option(None, "also keep the EMA weights every N steps as snapshots/step-N.safetensors "
                                        "(+ .json; `--denoiser PATH` loads them): a denoiser-quality ladder from one "
                                        "run", check="positive", none="off")
    bf16: bool = option(False, "bf16 autocast (slower than fp32 on the 2-core AVX-512 CPU: 1.2 vs 0.85 s/step)")
    limit: int | None = option(None, "use only the first N training images", check="positive", none="all")
    unet: dict | None = option(None, "UNet settings (default: the lean UNet for --image-size / --channels)",
                               cli=False)

    def validate(self) -> None:
        if self.image_size is not None and (self.image_size % 4 or self.image_size < 8):
            raise ValueError(f"argument --image-size must be a multiple of 4 and >= 8 (two 2x downsamplings), got "
                             f"{self.image_size}")
        if self.sigma_min >= self.sigma_max:
            raise ValueError(f"need --sigma-min < --sigma-max, got {self.sigma_min} >= {self.sigma_max}")


@dataclass
class DenoiserCommand:
    out: str = option("runs/denoiser-vp", "the run folder")
    resume: bool = option(False, "continue the run in --out from its checkpoint (same settings; --steps may grow)")
    device: str = option("auto", "auto, cpu, cuda, cuda:1, ... (not part of the run: a run started on a GPU "
                         "continues on the CPU with --resume)")
    data_root: str | None = option(None, "folder with the Fashion-MNIST IDX files")
    report_limit: int = option(2000, "test images for the report's x0 error per t", check="positive")
    report_samples: int = option(64, "DDIM-50 samples in the report's picture", check="positive")


@dataclass
class RobustnessConfig:
    suites: list[str] = option(help=f"all, or some of {', '.join(SUITES)}", flag="--suite",
                               factory=lambda: list(SUITES), metavar="SUITE,...")
    limit: int = option(500, "test images for the corruption and OOD suites", check="positive")
    de: bool = option(True, "also evaluate with DiffAug-Ensemble")
    de_timesteps: list[int] = option(help="DiffAug-Ensemble timesteps of the suites",
                                     factory=lambda: [0, 100, 200, 300, 400], metavar="T,T,...")
    seed: int = option(0, "seed of the corruptions, OOD sets and smoothing noise", check="nonnegative")
    corruption_data: str | None = option(None, "a CIFAR-10-C-style folder (<name>.npy + labels.npy) instead of "
                                         "on-the-fly Fashion-MNIST-C")
    ood_sets: list[str] = option(help="OOD sets: digits (scikit-learn's 8x8 digits, upscaled; not MNIST), "
                                 "uniform, gaussian, or image folders", flag="--ood",
                                 factory=lambda: ["digits", "uniform", "gaussian"], metavar="SET,...")
    certify_limit: int = option(100, "test images to certify", check="positive")
    sigmas: list[float] = option(help="smoothing noise levels ([0, 1] pixel units)", factory=lambda: [0.25, 0.5],
                                 metavar="S,S,...")
    n0: int = option(10, "noise samples to pick the class", check="positive")
    n: int = option(100, "noise samples to bound its probability (100: the largest certifiable radius is then "
                    "1.5 sigma at alpha 0.001)", check="positive")
    alpha: float = option(0.001, "failure probability of the certificate", check="open_unit")
    denoiser_precision: Literal["auto", "fp32", "bf16", "fp16"] = option("auto", PRECISION_HELP + " (DiffAug-Ensemble)")
    denoiser: str | None = option(None, "the denoiser of DiffAug-Ensemble and denoised smoothing: a shipped name, a "
                                  "train-denoiser export or a diffusers folder (default: the run's own --denoiser)")

    def validate(self) -> None:
        if self.suites == ["all"]:
            self.suites = list(SUITES)
        bad = [s for s in self.suites if s not in SUITES]
        if bad or not self.suites:
            raise ValueError(f"argument --suite: unknown {', '.join(bad) or '(none)'}; expected all or some of "
                             f"{', '.join(SUITES)}")
        if any(s <= 0 for s in self.sigmas) or not self.sigmas:
            raise ValueError(f"argument --sigmas must be numbers > 0, got {self.sigmas}")
        if self.de and not self.de_timesteps:
            raise ValueError("argument --de-timesteps is empty; give timesteps or --no-de")


@dataclass
class EvalCommand:
    baseline: str | None = option(None, "an evaluated baseline run folder: mCE relative to it (this evaluation's own "
                                  "--out: relative to itself, mCE 100)")
    out: str | None = option(None, "output folder (default: the run folder)")
    device: str = option("auto", DEVICE_HELP + " (not part of the evaluation: a stopped one may continue elsewhere)")


@dataclass
class SampleOptions:
    model: str | None = option(None, "fmnist, fmnist-v, fmnist-ve, an exported ema.safetensors, a released .pt / .safetensors "
                        "(with --denoiser-flags) or a diffusers folder (default: the classifier run's denoiser with "
                        "--classifier, else fmnist)")
    denoiser_flags: str | None = option(None, "with a released --model checkpoint: the flag line it was trained "
                                        "with (model and diffusion flags)")
    num: int = option(64, "images to sample", check="positive")
    batch_size: int = option(500, "images per sampler batch; each finished batch is kept, so a stopped draw "
                             "continues (the images do not depend on it)", check="positive")
    steps: str = option("ddim50", "respacing: ddimN, N, or comma-separated section counts")
    mode: Literal["ddim", "ddpm"] = option("ddim", "sampler")
    eta: float = option(0.0, "DDIM eta", check="nonnegative")
    seed: int = option(0, "seed of the sampler's noise", check="nonnegative")
    compile: bool = option(False, "torch.compile the network")
    denoiser_precision: Literal["auto", "fp32", "bf16", "fp16"] = option("auto", PRECISION_HELP)
    classifier: str | None = option(None, "a `train --mode noisy|da` run folder: classifier guidance")
    class_: str | None = option(None, "with --classifier: the class to generate (index or name), or 'all' for "
                                "every class in turn", flag="--class")
    scale: float = option(1.0, "guidance scale", check="nonnegative")
    ddim_guidance: Literal["guided_diffusion", "clip_after_shift"] = option(
        "guided_diffusion", "guided DDIM: guided-diffusion's condition_score (clip x0, then shift eps) or the earlier "
        "variant that clips x0 after the shift")
    out: str = option("runs/samples", "output folder")
    device: str = option("auto", DEVICE_HELP + " (not part of the draw: a stopped one may continue elsewhere)")


@dataclass
class FidelityOptions:
    samples: str = option("samples.npz", "a samples.npz written by `diffaug-fast sample`")
    extractor: str | None = option(None, "features for FID / KID and logits for IS: fmnist-classifier (shipped; "
                                   "for 1x28x28 Fashion-MNIST-like samples), inception or inception:FILE "
                                   "(torch-fidelity's Inception-v3; FILE: its weights), or a clean classifier "
                                   "trained on your images (a `train` run folder or an exported .safetensors); "
                                   "auto: fmnist-classifier for 1x28x28 samples, else inception", none="auto")
    judge: str | None = option(None, "the classifier that judges guided samples' class (default: the extractor)")
    reference: str | None = option(None, "real images to compare with (their test split): fmnist, cifar10:DIR, an "
                                   "image folder; auto: the data the samples' classifier run or denoiser was "
                                   "trained on, else fmnist", none="auto")
    reference_limit: int = option(10000, "test images to compare against", check="positive")
    bootstrap: int = option(1000, "redraws of the samples for 95% intervals of FID and KID (0: none)",
                            check="nonnegative")
    json: str | None = option(None, "also write the numbers to this file")
    device: str = option("auto", DEVICE_HELP + " (the feature extractor and the judge)")


@dataclass
class GradientsOptions:
    classifier: list[str] = option(help="`train --mode noisy|da` run folders to compare (repeat the flag or use "
                                   "commas)", factory=list, metavar="RUN", repeat=True)
    t: list[int] = option(help="timesteps", factory=lambda: [100, 300, 500, 700], metavar="T,T,...")
    images: int = option(200, "test images whose cosines are averaged (gradient_alignment.json)", check="positive")
    picture_rows: int = option(6, "of them, the first N drawn in gradients.png", check="positive")
    seed: int = option(0, "seed of the noise", check="nonnegative")
    out: str = option("runs/gradients", "output folder")
    device: str = option("auto", DEVICE_HELP)


@dataclass
class DiffuseOptions:
    schedule: Literal["linear", "cosine", "ve"] = option("linear", "noise schedule")
    steps: int = option(1000, "schedule length", check="positive")
    t: list[int] = option(help="timesteps", factory=lambda: list(range(0, 1000, 100)), metavar="T,T,...")
    images: int = option(8, "images in the picture", check="positive")
    limit: int | None = option(None, "use only the first N test images", check="positive", none="all")
    seed: int = option(0, "seed of the noise", check="nonnegative")
    backend: Literal["auto", "reference", "cpu", "cuda", "triton"] = option("auto", "kernel backend")
    data_root: str | None = option(None, "folder with the Fashion-MNIST IDX files")
    out: str = option("runs/diffuse", "output folder")


@dataclass
class ReportOptions:
    model: str = option("fmnist", "fmnist (= fmnist-vp), fmnist-v, fmnist-ve, an exported ema.safetensors, a released .pt / "
                        ".safetensors (with --denoiser-flags) or a diffusers folder")
    denoiser_flags: str | None = option(None, "with a released --model checkpoint: the flag line it was trained "
                                        "with (model and diffusion flags)")
    limit: int = option(2000, "test images used for the MSE", check="positive")
    data: str | None = option(None, "the images the denoiser was trained on: fmnist, cifar10:DIR, an image folder "
                              "(default: the data its train-denoiser export recorded, fmnist for the shipped ones)")
    samples: int = option(64, "DDIM-50 samples in the picture", check="positive")
    seed: int = option(0, "seed of t and the noise", check="nonnegative")
    denoiser_precision: list[str] = option(help="precisions of the x̂0 MSE columns (fp32, bf16, fp16, auto): the "
                                           "first is the report's, each other gets its own column and its ratio to "
                                           "the first (the quality gate: bf16 within +2% of fp32); the pictures use "
                                           "the first", factory=lambda: ["fp32"], metavar="P,P,...")
    out: str = option("runs/denoiser-report", "output folder")
    device: str = option("auto", DEVICE_HELP)

    def validate(self) -> None:
        bad = [p for p in self.denoiser_precision if p not in ("fp32", "bf16", "fp16", "auto")]
        if bad or not self.denoiser_precision or len(set(self.denoiser_precision)) != len(self.denoiser_precision):
            raise ValueError(f"argument --denoiser-precision: expected distinct values among fp32, bf16, fp16, auto, "
                             f"got {','.join(self.denoiser_precision) or '(none)'}")


@dataclass
class StudyRunOptions:
    """``diffaug-fast study run``: where a declared study's runs and numbers go, and how many run at once."""
    jobs: int = option(1, "runs and evaluations at once, each a `diffaug-fast` subprocess (with N > 1 each gets "
                       "cores / N threads unless OMP_NUM_THREADS is set)", check="positive")
    runs: str = option("runs/studies", "where the run folders go: RUNS/<study>/<variant>/seed<S>/ (logs beside them)")
    results: str = option("docs/results", "where the collected numbers go: RESULTS/<study>/runs.json")
    optional: list[str] = option(help="optional evaluations to run too (declared `optional = true`: a GPU job, "
                                 "say): their names, or all", factory=list, metavar="NAME,...")


@dataclass
class StudyReportOptions:
    runs: str = option("runs/studies", "the run folders to collect first, those present here: "
                       "RUNS/<study>/<variant>/seed<S>/")
    results: str = option("docs/results", "the folder holding <study>/runs.json; the report is written beside it")


@dataclass
class StudyIndexOptions:
    experiments: str = option("experiments", "the folder of study files (<name>.toml)")
    results: str = option("docs/results", "the folder of the studies' reports (<name>/study.json)")
    out: str = option("docs/results.md", "the index to write")
    readme: str | None = option(None, "also rewrite the claims block of this README (the claims of the studies "
                                "marked headline = true, as their verdicts say them)", none="none", metavar="FILE")
