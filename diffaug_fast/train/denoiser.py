"""Train a small diffusion model on Fashion-MNIST: the package's embedded denoisers.

``kind="vp"``: a DDPM linear/cosine VP schedule; the network predicts eps, v or x0 (``parametrization``, with its
loss weighting: :mod:`diffaug_fast.diffusion.targets`). ``kind="ve"``: a score-SDE style
sigma-conditioned score network (:class:`~diffaug_fast.diffusion.ve.VEScoreNet`, EDM-preconditioned)
on the geometric VE grid, trained by denoising score matching with EDM's loss weighting.

On the CPU or a GPU (``device``; not part of the run, so a run started on a GPU continues on the CPU); bf16
autocast, EMA weights, atomic checkpoints with exact resume (model, optimizer, EMA, RNG, data order; a resumed run
may be given a larger ``steps``), a progress bar with loss and images/s.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, replace
from pathlib import Path

import torch

from diffaug_fast import streams
from diffaug_fast.config import DenoiserConfig
from diffaug_fast.errors import DiffAugError
from diffaug_fast.runs import files
from diffaug_fast.runs.checkpoint import checkpoint_exists, load_verified
from diffaug_fast.runs.provenance import data_record
from diffaug_fast.data import eval_images, load_dataset, load_fashion_mnist, native_shape, stratified_subset
from diffaug_fast.diffusion import Schedule, get_schedule, q_sample, ve_geometric
from diffaug_fast.diffusion.targets import VP_PARAMETRIZATIONS, prediction_loss
from diffaug_fast.diffusion.unet import UNetModel
from diffaug_fast.diffusion.ve import VEScoreNet
from diffaug_fast.train import loop
from diffaug_fast.train.optim import EMA

# A lean UNet for 28x28 (28 -> 14 -> 7): 1.2 M parameters, attention at 7x7; ~0.85 s per batch of 128 on 2 CPU cores.
FMNIST_UNET = dict(image_size=28, in_channels=1, num_channels=32, num_res_blocks=1, attention_resolutions="7",
                   channel_mult=(1, 2, 2), num_head_channels=32, use_scale_shift_norm=True, dropout=0.0)


KINDS = ("vp", "ve")
# What a new VP run predicts when --parametrization is auto (docs/results/denoiser_parametrization/: v against eps
# and x0 at the same budget). Runs written before the option predicted eps, and resume as eps.
DEFAULT_VP_PARAMETRIZATION = "v"


def unet_for(image_size: int = 28, channels: int = 1) -> dict:
    """The lean UNet's settings for other image sizes: attention at a quarter of the size."""
    if image_size % 4 or image_size < 8:
        raise ValueError(f"argument 'image_size' must be a multiple of 4 and >= 8 (two 2x downsamplings), got "
                         f"{image_size}")
    return {**FMNIST_UNET, "image_size": image_size, "in_channels": channels,
            "attention_resolutions": str(image_size // 4)}


def build_network(config: DenoiserConfig) -> tuple[torch.nn.Module, Schedule]:
    """The untrained network for ``config`` and the 1000-step schedule it is trained on."""
    if config.kind not in KINDS:
        raise ValueError(f"argument --kind is {config.kind!r}; expected one of {', '.join(KINDS)}")
    if config.kind == "ve":
        return (VEScoreNet(UNetModel(**unet_settings(config)), config.sigma_min, config.sigma_max, config.sigma_data),
                ve_geometric(1000, config.sigma_min, config.sigma_max))
    return UNetModel(**unet_settings(config)), get_schedule(config.schedule)


def denoising_loss(model: torch.nn.Module, schedule: Schedule, x0: torch.Tensor, t: torch.Tensor, seed: int,
                   parametrization: str = "eps"):
    """VP: the ``parametrization``'s loss (eps-MSE, v-MSE or max(SNR, 1)-weighted x0-MSE; diffusion/targets.py).
    VE: MSE of the preconditioned network's output against its exact target (EDM weighting)."""
    xt, eps = q_sample(schedule, x0, t, seed=seed, return_noise=True)
    if isinstance(model, VEScoreNet):
        sigma = schedule.sigmas.to(t.device)[t].float()
        return torch.nn.functional.mse_loss(model.raw(xt, sigma).float(), model.training_target(xt, x0, sigma))
    a, s = schedule.coefficients(t, device=x0.device)
    return prediction_loss(parametrization, model(xt, t), x0, eps, a, s)


def _batches(n: int, batch: int, seed: int, consumed: int):
    """Index batches; epoch e is a permutation keyed by (seed, e), so resuming needs only a count."""
    per_epoch = n // batch
    epoch, skip = divmod(consumed, per_epoch)
    while True:
        order = torch.randperm(n, generator=streams.generator(seed, "denoiser_order", epoch))
        for k in range(skip, per_epoch):
            yield order[k * batch:(k + 1) * batch]
        epoch, skip = epoch + 1, 0


def unet_settings(config: DenoiserConfig) -> dict:
    if config.unet:
        return dict(config.unet)
    config = with_image_shape(config)
    return unet_for(config.image_size, config.channels)


def with_image_shape(config: DenoiserConfig) -> DenoiserConfig:
    """``config`` with --image-size / --channels left auto set: the given UNet's, else the data's own
    (``data.native_shape``: Fashion-MNIST 28, 1; CIFAR 32, 3; an image folder its first image's)."""
    if config.image_size is not None and config.channels is not None:
        return config
    size, channels = (config.unet["image_size"], config.unet["in_channels"]) if config.unet else \
        native_shape(config.data)
    return replace(config, image_size=config.image_size or size, channels=config.channels or channels)


def with_step_defaults(config: DenoiserConfig) -> DenoiserConfig:
    """``--ema-decay`` / ``--warmup-steps`` auto, scaled to the step budget: EMA decay min(0.999, 1 - 10/steps)
    (its average spans ~a tenth of the run, never mostly the random start) and warm-up min(200, steps/10);
    ``--parametrization`` auto: v for VP (DEFAULT_VP_PARAMETRIZATION), the preconditioned score for VE."""
    ema = config.ema_decay if config.ema_decay is not None else min(0.999, max(0.0, 1 - 10 / config.steps))
    warmup = config.warmup if config.warmup is not None else max(1, min(200, config.steps // 10))
    return replace(config, ema_decay=ema, warmup=warmup, parametrization=resolved_parametrization(config))


def resolved_parametrization(config: DenoiserConfig) -> str:
    """What the network of ``config`` predicts: the given VP parametrization, or auto's choice."""
    value = config.parametrization
    if config.kind == "ve":
        if value not in ("auto", "score"):
            raise ValueError(f"argument --parametrization {value} is for --kind vp; --kind ve trains an "
                             "EDM-preconditioned score network (leave --parametrization auto)")
        return "score"
    if value == "auto":
        return DEFAULT_VP_PARAMETRIZATION
    if value not in VP_PARAMETRIZATIONS:
        raise ValueError(f"argument --parametrization is {value!r}; expected auto or one of "
                         f"{', '.join(VP_PARAMETRIZATIONS)}")
    return value


def saved_settings(saved: dict) -> dict:
    """A checkpoint's config as this version reads it: runs written before --parametrization predicted eps (VP)."""
    return {"parametrization": "score" if saved.get("kind", "vp") == "ve" else "eps", **saved}


def continued(config: DenoiserConfig, saved: dict) -> DenoiserConfig:
    """``config`` for continuing a run saved with ``saved``: options left auto take the run's own values (its EMA
    decay, warm-up, parametrization and image shape), so a run given a larger --steps keeps training what it trained."""
    saved = saved_settings(saved)
    auto = {"ema_decay": config.ema_decay is None, "warmup": config.warmup is None,
            "parametrization": config.parametrization == "auto", "image_size": config.image_size is None,
            "channels": config.channels is None}
    return replace(config, **{k: saved[k] for k, is_auto in auto.items() if is_auto and k in saved})


MIN_STEPS, MIN_PASSES, ENOUGH_IMAGES = 2000, 50, 300_000


def too_short(steps: int, batch: int, images: int) -> str | None:
    """The warning for a run far too short to learn its data: fewer than 2000 steps, or fewer than 50 passes over
    the data unless 300 k images are seen (Fashion-MNIST's 2500 x 128 = 5 passes over 60 k images is enough)."""
    seen = steps * batch
    if steps >= MIN_STEPS and seen >= min(MIN_PASSES * images, ENOUGH_IMAGES):
        return None
    return (f"warning: {steps} steps x batch {batch} = {seen / images:.1f} passes over {images} images is far too "
            f"short to learn them (need >= {MIN_STEPS} steps and >= {MIN_PASSES} passes or "
            f"{ENOUGH_IMAGES:,} images seen); expect noise-like samples (see the report)")


class DenoiserTrainer:
    """The denoiser's training state; ``loop.run`` drives it. Every step: a batch in keyed order, t and the
    Philox seed of its noise from the torch RNG (saved in the checkpoint), AdamW, gradient clipping, EMA."""

    def __init__(self, config: DenoiserConfig, images: torch.Tensor, device: torch.device | str = "cpu"):
        if len(images) < config.batch_size:
            raise ValueError(f"argument --batch-size ({config.batch_size}) exceeds the {len(images)} training images")
        config = with_step_defaults(config)
        self.device = torch.device(device)
        self.config, self.images = config, images.to(self.device)
        model, self.schedule = build_network(config)  # initialised on the CPU: the same weights on every device
        self.model = model.to(self.device)
        self.ema = EMA(self.model, config.ema_decay)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=0.0)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: min(1.0, (s + 1) / config.warmup))
        self.step, self.consumed, self.total_steps = 0, 0, config.steps
        self._order = None

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
                "sched": self.sched.state_dict(), "torch_rng": torch.get_rng_state(), "step": self.step,
                "consumed": self.consumed, "config": asdict(self.config)}

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("config")
        if saved is not None:
            same_denoiser_run(saved, self.config, "the checkpoint")
        if state["step"] > self.config.steps:
            raise DiffAugError(f"argument --steps is {self.config.steps} but the run in --out already reached step "
                               f"{state['step']}; pass --steps >= {state['step']}")
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        torch.set_rng_state(state["torch_rng"])
        self.step, self.consumed = state["step"], state["consumed"]

    def log_fields(self) -> dict:
        return {}

    def after_step(self, out_dir: Path) -> None:
        """Every --snapshot-every steps: the EMA weights as they are now, exported beside the run."""
        every = self.config.snapshot_every
        if every and self.step % every == 0:
            write_ema(self.ema.state_dict(), self.config, Path(out_dir) / files.SNAPSHOTS / f"step-{self.step}.safetensors")

    def train_step(self) -> dict:
        if self._order is None:
            self._order = _batches(len(self.images), self.config.batch_size, self.config.seed, self.consumed)
        x0 = self.images[next(self._order).to(self.device)]
        t = torch.randint(0, len(self.schedule), (len(x0),))  # t and the noise seed from the CPU generator, on any
        seed = int(torch.randint(0, 2**62, ()))  # device: the checkpoint's torch_rng is all a resume needs
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.bf16):
            loss = denoising_loss(self.model, self.schedule, x0, t.to(self.device), seed, self.config.parametrization)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.sched.step()
        self.ema.update(self.model)
        self.consumed += 1
        return {"loss": loss.item()}


# a run may be continued to more steps, with another checkpoint / snapshot cadence
NOT_IDENTITY = ("checkpoint_every", "snapshot_every", "steps")


def same_denoiser_run(saved: dict, config: DenoiserConfig, what: str) -> None:
    """Refuse to continue a denoiser run with other settings (step budget and checkpoint cadence aside)."""
    saved, now = saved_settings(saved), asdict(config)
    changed = sorted(k for k in now if k not in NOT_IDENTITY and k in saved and saved[k] != now[k])
    if changed:
        detail = ", ".join(f"{k}: {saved[k]!r} -> {now[k]!r}" for k in changed)
        raise DiffAugError(f"{what} was written with different settings ({detail}); use the same settings to "
                           "resume, or another --out folder")


def load_images(config: DenoiserConfig, data_root=None) -> torch.Tensor:
    if config.data == "fmnist":
        return load_fashion_mnist("train", root=data_root, limit=config.limit)[0]
    unet = unet_settings(config)  # an image folder or cifar10:DIR / cifar100:DIR, read at the UNet's size
    return load_dataset(config.data, "train", image_size=unet["image_size"], channels=unet["in_channels"],
                        limit=config.limit)[0]


def train_denoiser(config: DenoiserConfig, out_dir: str | Path, *, data_root=None, progress: bool = True,
                   stop_after: int | None = None, limit: int | None = None, device: torch.device | str = "cpu") -> Path:
    """Train (or resume from out_dir's checkpoint) up to config.steps on ``device``; ``stop_after`` ends this call
    early; ``limit`` (if given) replaces ``config.limit``. Returns the checkpoint's path (which
    :func:`export_ema` reads). A resumed run takes its own values for the options left auto and may be given a
    larger ``config.steps``; a checkpoint written on a GPU continues on the CPU and the other way round."""
    out_dir = Path(out_dir)
    if limit is not None:
        config = replace(config, limit=limit)
    checkpoint = out_dir / files.CHECKPOINT
    state = load_verified(checkpoint) if checkpoint_exists(checkpoint) else None  # tensors on the CPU
    if state is not None and state.get("config") is not None:
        config = continued(config, state["config"])
    config = with_image_shape(config)  # saved with the run: its export and report read the same shape
    if config.unet is None:
        config = replace(config, unet=unet_for(config.image_size, config.channels))
    config = with_step_defaults(config)  # a bad --parametrization fails here, before the run folder is made
    files.make_folder(out_dir)
    torch.manual_seed(config.seed)
    trainer = DenoiserTrainer(config, load_images(config, data_root), device)
    if state is not None:  # first: a resume with other settings is refused before any warning
        trainer.load_state_dict(state)
    warning = too_short(config.steps, config.batch_size, len(trainer.images))
    if warning and progress:
        print(warning, file=sys.stderr)
    files.write_json(out_dir / files.CONFIG, asdict(trainer.config))
    loop.run(trainer, out_dir, desc=f"train-denoiser ({config.kind})", images_per_step=config.batch_size,
             log_every=1, checkpoint_every=config.checkpoint_every, progress=progress, stop_after=stop_after)
    return checkpoint


def export_ema(checkpoint: str | Path, config: DenoiserConfig, weights_out: str | Path) -> DenoiserConfig:
    """EMA weights as safetensors plus the config JSON beside them (the parametrization and image shape the
    checkpoint was trained with, when ``config`` leaves them auto); returns ``config`` so completed."""
    saved = load_verified(checkpoint)
    if saved.get("config") is not None:
        config = continued(config, saved["config"])
    write_ema(saved["ema"], config, weights_out)
    return config


def write_ema(state: dict, config: DenoiserConfig, weights_out: str | Path) -> None:
    """EMA weights -> ``weights_out`` (safetensors, atomically) + ``.json`` (what rebuilds the model)."""
    from safetensors.torch import save_file

    weights_out = Path(weights_out)
    weights_out.parent.mkdir(parents=True, exist_ok=True)
    tmp = weights_out.with_name(weights_out.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))
    tmp.replace(weights_out)
    files.write_json(weights_out.with_suffix(".json"), {**export_config(config),
                                                        "data": data_record(config.data, weights_out.parent)})


def export_config(config: DenoiserConfig) -> dict:
    """What :func:`diffaug_fast.runs.weights.denoiser_from_config` needs to rebuild the model."""
    if config.kind == "ve":
        return {"kind": "ve", "schedule": "ve", "sigma_min": config.sigma_min, "sigma_max": config.sigma_max,
                "sigma_data": config.sigma_data, "parametrization": "score", "condition": "sigma",
                "unet": unet_settings(config)}
    return {"kind": "vp", "schedule": config.schedule, "parametrization": resolved_parametrization(config),
            "unet": unet_settings(config)}


def write_denoiser_report(config: DenoiserConfig, out_dir: str | Path, *, data_root=None, limit: int = 2000,
                          samples: int = 64, train_images: torch.Tensor | None = None, device="cpu",
                          progress: bool = True) -> dict:
    """The report ``denoiser-report`` writes, for the EMA weights just exported to ``out_dir``: x̂0 error per t on
    the data's test split against the mean training image, a sample grid, DiffAug examples, report.md; the
    network runs on ``device``. ``progress``: bars and status lines on stderr (it takes minutes on a CPU)."""
    from diffaug_fast.eval.denoiser_report import status, write_report
    from diffaug_fast.runs.weights import load_exported

    out_dir = Path(out_dir)
    unet = unet_settings(config)
    status(f"report: reading up to {limit} test images of {config.data}", progress)
    if config.data == "fmnist":  # a class-stratified subset, not the first ``limit`` (data.subsets)
        test, labels = load_fashion_mnist("test", root=data_root)
        test = test[stratified_subset(labels, limit)]
    else:
        test = eval_images(config.data, "test", image_size=unet["image_size"], channels=unet["in_channels"],
                           limit=limit, decode=True)[0]
    if train_images is None:
        status(f"report: reading the training images of {config.data} for the mean image", progress)
        train_images = load_images(config, data_root)
    denoiser = load_exported(out_dir / files.DENOISER_WEIGHTS, device)
    return write_report(denoiser, out_dir, test, mean_image=train_images.mean(0), limit=limit, samples=samples,
                        seed=config.seed, title=f"train-denoiser {config.kind}, {config.steps} steps on {config.data}",
                        progress=progress)
