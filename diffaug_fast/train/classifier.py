"""DiffAug classifier training (the main job of ``diffaug-fast train``).

Each step takes a global batch of B training images, applies the standard augmentation (random crop +
flip, optionally AugMix) and, with DiffAug on, appends their DiffAug versions; the loss is
CE(clean) + CE(DiffAug) from one forward pass over the 2B images (``diffaug="only"`` keeps just the
DiffAug half, ``"off"`` is the baseline).

Everything random is keyed by (seed, epoch) or (seed, step) and drawn for the global batch, so
* resuming from a checkpoint continues bit-exactly (model, optimizer, LR schedule, grad scaler,
  EMA, torch RNG and data order are saved atomically), and
* data-parallel ranks each take a contiguous shard of the global batch and see exactly the images
  and noise a single process would (with ``norm="group"`` the result then equals one process).
"""
from __future__ import annotations

import copy
import json
import math
import os
import signal
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm.auto import tqdm

from diffaug_fast.augment import DE_TIMESTEPS, _FastNet, amp_dtype, autocast, diffuse_and_denoise, sample_timesteps
from diffaug_fast.runs.checkpoint import checkpoint_exists, load_verified, save_atomic
from diffaug_fast.models.classifiers import build_classifier
from diffaug_fast.ops import diffuse
from diffaug_fast.train.distributed import world
from diffaug_fast.train.transforms import augmix, crop_flip, crop_flip_params

DIFFAUG_MODES = ("off", "on", "only")
MODES = ("clean", "noisy", "da")  # what the classifier sees: (augmented) images, (x_t, t), or (x_t, x0_hat, t)
TIME_WIDTHS = {"resnet-small": (16, 32, 64), "resnet-medium": (32, 64, 128), "wrn-16-4": (64, 128, 256)}


@dataclass
class TrainConfig:
    data: str = "fmnist"  # or the path of an image folder (one sub-folder per class)
    image_size: int = 28  # image folders are resized to this ...
    channels: int = 1  # ... and read as grayscale (1) or RGB (3); they must match the denoiser's images
    mode: str = "clean"  # clean: DiffAug training; noisy / da: a time-conditioned classifier for guidance
    fusion: str = "input"  # DA classifier: 'input' (channel concat) or 'feature' (time-gated)
    model: str = "resnet-small"
    norm: str = "batch"
    epochs: int = 1
    batch_size: int = 128  # global: split over data-parallel ranks
    optimizer: str = "sgd"
    lr: float = 0.05
    weight_decay: float = 5e-4
    lr_schedule: str = "cosine"
    warmup_steps: int = 50
    diffaug: str = "on"
    augmix: bool = False
    t_min: int = 0
    t_max: int | None = None  # default: the denoiser's last timestep
    denoiser: str = "fmnist"  # an embedded model name or the path of an exported ema.safetensors
    ema_decay: float = 0.0  # 0 = no EMA
    amp: str = "auto"  # auto: bf16 on CUDA, off on CPU
    compile: str = "auto"  # auto: the denoiser always (frozen-weight inductor), the classifier on CUDA only
    seed: int = 0
    train_limit: int | None = None
    eval_limit: int | None = 1000  # test images for the DiffAug-Ensemble / per-t / noisy evaluation
    de_timesteps: list = field(default_factory=lambda: list(DE_TIMESTEPS))
    noise_std: float = 0.4  # Gaussian noise (in [-1, 1] pixel units) for the noisy-test-set accuracy
    checkpoint_every: int = 100
    log_every: int = 10
    device: str = "auto"
    # Semi-supervised (ssl) and positive-unlabeled (pu) training of noisy / DA classifiers (train/ssl.py).
    ssl: bool = False
    pu: bool = False
    labels_per_class: int = 100  # labeled examples per class (pu: per positive class); the rest are unlabeled
    consistency: bool = True  # the temporal-consistency term on unlabeled data (off: labeled-only / nnPU-only)
    tc_radius: int = 50  # t' = t + U{-radius..radius}
    tc_noise: str = "same"  # x_t and x_t' share ε ("same") or not ("fresh")
    tc_target: str = "lower"  # the detached side: the prediction at the lower t, the higher t, or both directions
    tc_weight: float = 1.0
    tc_rampup: int = 200  # steps of sigmoid ramp-up of the consistency weight
    tc_threshold: float = 0.0  # skip pairs whose target's top probability is below this
    positive: list = field(default_factory=list)  # pu: the classes that make up "positive"
    prior: float | None = None  # pu: P(positive); None = the training set's true fraction (a known prior)
    pu_loss: str = "logistic"  # nnPU's margin loss: logistic or sigmoid

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"argument 'mode' is {self.mode!r}; expected one of {', '.join(MODES)}")
        if self.mode != "clean" and self.model not in TIME_WIDTHS:
            raise ValueError(f"argument 'model' is {self.model!r}; --mode {self.mode} builds a time-conditioned "
                             f"ResNet: expected one of {', '.join(TIME_WIDTHS)}")
        if self.fusion not in ("input", "feature"):
            raise ValueError(f"argument 'fusion' is {self.fusion!r}; expected 'input' or 'feature'")
        if self.diffaug not in DIFFAUG_MODES:
            raise ValueError(f"argument 'diffaug' is {self.diffaug!r}; expected one of {', '.join(DIFFAUG_MODES)}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"argument 'optimizer' is {self.optimizer!r}; expected 'sgd' or 'adamw'")
        if self.lr_schedule not in ("cosine", "step", "constant"):
            raise ValueError(f"argument 'lr_schedule' is {self.lr_schedule!r}; expected cosine, step or constant")
        if self.data != "fmnist" and not Path(self.data).is_dir():
            raise ValueError(f"argument 'data' is {self.data!r}; expected 'fmnist' or a folder of images with one "
                             "sub-folder per class")
        if self.channels not in (1, 3):
            raise ValueError(f"argument 'channels' must be 1 or 3, got {self.channels!r}")
        for name in ("epochs", "batch_size", "checkpoint_every", "log_every", "image_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"argument '{name}' must be a positive integer, got {getattr(self, name)!r}")
        if self.compile not in ("auto", "on", "off"):
            raise ValueError(f"argument 'compile' is {self.compile!r}; expected auto, on or off")
        amp_dtype(self.amp, "cpu")
        self._validate_ssl()

    def _validate_ssl(self) -> None:
        from diffaug_fast.train.ssl import PU_LOSSES, TC_NOISE, TC_TARGETS

        if not (self.ssl or self.pu):
            return
        which = "--pu" if self.pu else "--ssl"
        if self.ssl and self.pu:
            raise ValueError("choose one of --ssl (few labels per class) and --pu (positive-unlabeled)")
        if self.mode == "clean":
            raise ValueError(f"{which} trains a noisy or DA classifier: add --mode noisy or --mode da")
        if not isinstance(self.labels_per_class, int) or self.labels_per_class < 1:
            raise ValueError(f"argument 'labels_per_class' must be a positive integer, got {self.labels_per_class!r}")
        if self.tc_noise not in TC_NOISE:
            raise ValueError(f"argument 'tc_noise' is {self.tc_noise!r}; expected one of {', '.join(TC_NOISE)}")
        if self.tc_target not in TC_TARGETS:
            raise ValueError(f"argument 'tc_target' is {self.tc_target!r}; expected one of {', '.join(TC_TARGETS)}")
        if not isinstance(self.tc_radius, int) or self.tc_radius < 0:
            raise ValueError(f"argument 'tc_radius' must be an integer >= 0, got {self.tc_radius!r}")
        if self.tc_weight < 0 or not 0 <= self.tc_threshold <= 1:
            raise ValueError(f"need tc_weight >= 0 and 0 <= tc_threshold <= 1, got {self.tc_weight}, "
                             f"{self.tc_threshold}")
        if self.pu:
            if not self.positive or len(set(self.positive)) != len(self.positive):
                raise ValueError(f"--pu needs --positive: distinct class indices, got {self.positive!r}")
            if self.pu_loss not in PU_LOSSES:
                raise ValueError(f"argument 'pu_loss' is {self.pu_loss!r}; expected one of {', '.join(PU_LOSSES)}")
            if self.prior is not None and not 0 < self.prior < 1:
                raise ValueError(f"argument 'prior' must lie in (0, 1), got {self.prior}")


PRESETS = {
    # ~5 minutes on 2 CPU cores with DiffAug on: one epoch of Fashion-MNIST, 78 k-parameter ResNet.
    "quick": {},
    # The paper's recipe scaled to Fashion-MNIST: a WRN-16-4, 30 epochs, SGD + cosine, EMA.
    "paper": {"model": "wrn-16-4", "epochs": 30, "lr": 0.1, "ema_decay": 0.999, "eval_limit": None},
}


def config_from_preset(preset: str = "quick", **overrides) -> TrainConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    known = {f.name for f in fields(TrainConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"unknown training options: {', '.join(sorted(unknown))}")
    config = TrainConfig(**{**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}})
    config.validate()
    return config


# ---------------------------------------------------------------------------------------------------------------
# distributed helpers: a no-op world of one unless torch.distributed is initialised


def _device(config: TrainConfig) -> torch.device:
    if config.device != "auto":
        return torch.device(config.device)
    if torch.cuda.is_available():
        rank = int(os.environ.get("LOCAL_RANK", world()[0]))
        return torch.device("cuda", rank % torch.cuda.device_count())
    return torch.device("cpu")


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7_919 + epoch))


def _lr_lambda(config: TrainConfig, total: int):
    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / max(config.warmup_steps, 1))
        if config.lr_schedule == "cosine":
            return warm * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        if config.lr_schedule == "step":
            return warm * 0.1 ** (int(step >= total // 2) + int(step >= 3 * total // 4))
        return warm
    return factor


def load_denoiser(name: str, device="cpu"):
    """An embedded denoiser by name (``fmnist``, ``fmnist-ve``) or an exported ``ema.safetensors`` path."""
    from diffaug_fast.runs.weights import MODELS, load_exported, pretrained

    return pretrained(name, device) if name in MODELS else load_exported(name, device)


def build_model(config: TrainConfig, denoiser, *, num_classes: int = 10, in_channels: int = 1,
                image_size: int = 28) -> torch.nn.Module:
    """The classifier ``config`` trains: a plain one (clean mode) or a noisy / DA classifier of x_t."""
    if config.mode == "clean":
        return build_classifier(config.model, num_classes=num_classes, in_channels=in_channels,
                                image_size=image_size, norm=config.norm)
    from diffaug_fast.models.noisy import build_noisy_classifier

    return build_noisy_classifier(config.mode, denoiser, num_classes=num_classes, in_channels=in_channels,
                                  fusion=config.fusion, widths=TIME_WIDTHS[config.model])


class _Job:
    """One training run's state; rank 0 writes the run folder."""

    def __init__(self, config: TrainConfig, out_dir: Path, data, test_data, progress: bool):
        self.config, self.out_dir, self.progress = config, out_dir, progress
        self.rank, self.world = world()
        if config.batch_size % self.world:
            raise ValueError(f"argument 'batch_size' ({config.batch_size}) must be divisible by the number of "
                             f"processes ({self.world})")
        self.device = _device(config)
        self.images, self.labels = data
        self.test_images, self.test_labels = test_data
        self.steps_per_epoch = len(self.images) // config.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"batch size {config.batch_size} exceeds the {len(self.images)} training images")
        self.total_steps = self.steps_per_epoch * config.epochs
        torch.manual_seed(config.seed)
        in_channels, size = self.images.shape[1], self.images.shape[-1]
        num_classes = int(self.labels.max()) + 1
        if config.ssl or config.pu:
            self._setup_semi_supervised(num_classes)
            num_classes = 2 if config.pu else num_classes
        self.denoiser = (load_denoiser(config.denoiser, self.device)
                         if config.mode != "clean" or config.diffaug != "off" or config.de_timesteps else None)
        if self.denoiser is not None:
            shape = self.denoiser.image_shape
            if shape is not None and tuple(self.images.shape[1:]) != shape:
                raise ValueError(f"the denoiser {config.denoiser!r} works on {'x'.join(map(str, shape))} images but "
                                 f"the data are {'x'.join(map(str, self.images.shape[1:]))}; pass a denoiser of "
                                 "these images (--denoiser) or matching --image-size / --channels")
        self.model = build_model(config, self.denoiser, num_classes=num_classes, in_channels=in_channels,
                                 image_size=size).to(self.device)
        if self.world > 1 and self.device.type == "cuda" and config.norm == "batch":
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.model = self.model.to(memory_format=torch.channels_last)
        self.ema = copy.deepcopy(self.model).requires_grad_(False) if config.ema_decay else None
        if config.optimizer == "sgd":
            self.opt = torch.optim.SGD(self.model.parameters(), lr=config.lr, momentum=0.9, nesterov=True,
                                       weight_decay=config.weight_decay)
        else:
            self.opt = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, _lr_lambda(config, self.total_steps))
        self.amp = amp_dtype(config.amp, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        use_compile = config.compile == "on" or (config.compile == "auto" and self.device.type == "cuda")
        self.fast_net = (_FastNet(self.denoiser, compile=config.compile != "off", amp=config.amp, device=self.device)
                         if self.denoiser is not None else None)
        self.t_max = (len(self.denoiser.schedule) - 1 if config.t_max is None else config.t_max) \
            if self.denoiser is not None else 0
        if self.denoiser is not None and not 0 <= config.t_min <= self.t_max < len(self.denoiser.schedule):
            raise ValueError(f"need 0 <= t_min <= t_max <= {len(self.denoiser.schedule) - 1}, got "
                             f"t_min={config.t_min}, t_max={self.t_max}")
        self.train_model = self.model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.forward = torch.compile(self.train_model) if use_compile else self.train_model
        self.step = 0

    def _setup_semi_supervised(self, num_classes: int) -> None:
        from diffaug_fast.train.ssl import labeled_subset

        config = self.config
        if config.pu:
            bad = [c for c in config.positive if not 0 <= c < num_classes]
            if bad:
                raise ValueError(f"--positive {bad}: class indices must lie in 0..{num_classes - 1}")
            positive = torch.isin(self.labels, torch.tensor(config.positive))
            self.prior = config.prior if config.prior is not None else float(positive.float().mean())
            self.labeled = labeled_subset(self.labels, config.labels_per_class, config.seed, classes=config.positive)
            self.test_labels = torch.isin(self.test_labels, torch.tensor(config.positive)).long()
        else:
            self.labeled = labeled_subset(self.labels, config.labels_per_class, config.seed)

    # --- checkpoints --------------------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                "scaler": self.scaler.state_dict(), "ema": self.ema.state_dict() if self.ema else None,
                "torch_rng": torch.get_rng_state(), "step": self.step, "config": asdict(self.config)}

    def save(self) -> None:
        if self.rank == 0:
            save_atomic(self.state(), self.checkpoint_path)

    def resume(self) -> None:
        if not checkpoint_exists(self.checkpoint_path):
            return
        state = load_verified(self.checkpoint_path)
        saved = {k: v for k, v in state["config"].items() if k not in ("epochs", "checkpoint_every", "log_every")}
        current = {k: v for k, v in asdict(self.config).items() if k in saved}
        changed = sorted(k for k in saved if saved[k] != current.get(k))
        if changed:
            raise ValueError(f"{self.checkpoint_path} was written with different settings ({', '.join(changed)}); "
                             "use another --out folder or the same settings to resume")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["torch_rng"])
        self.step = state["step"]

    # --- one step -----------------------------------------------------------------------------------------------
    def batch(self, step: int) -> tuple[tuple, torch.Tensor]:
        """This rank's shard of the global batch of ``step``: (the classifier's inputs, labels).

        Inputs: (clean [+ DiffAug] images,) in clean mode, (x_t, t) for noisy, (x_t, t, x0_hat) for DA.
        """
        config, b = self.config, self.config.batch_size
        epoch, k = divmod(step, self.steps_per_epoch)
        global_idx = _epoch_order(len(self.images), config.seed, epoch)[k * b:(k + 1) * b]
        gen = _step_generator(config.seed, step)
        crops = crop_flip_params(b, gen)
        ts = sample_timesteps(b, config.t_min, self.t_max, gen)
        augmix_seeds = torch.randint(0, 2**62, (b,), generator=gen)
        shard = slice(self.rank * b // self.world, (self.rank + 1) * b // self.world)
        idx = global_idx[shard]
        x = crop_flip(self.images[idx], crops[shard]).to(self.device)
        y = self.labels[idx].to(self.device)
        if config.augmix:
            x = augmix(x, augmix_seeds[shard])
        if config.mode != "clean":  # a classifier of noisy images: t over the whole chain
            t_all = sample_timesteps(b, 0, len(self.denoiser.schedule) - 1, gen)[shard].to(self.device)
            # the noisy mode sees the same x_t as the DA mode would, without running the denoiser
            return self._noisy_inputs(x, t_all, (step * b + shard.start) * x[0].numel()), y
        if config.diffaug == "off":
            return (x,), y
        per_image = x[0].numel()
        x_hat = diffuse_and_denoise(self.denoiser, x, ts[shard], seed=config.seed,
                                    offset=(step * b + shard.start) * per_image, net=self.fast_net)
        if config.diffaug == "only":
            return (x_hat,), y
        return (torch.cat([x, x_hat]),), torch.cat([y, y])

    def _noisy_inputs(self, x: torch.Tensor, t: torch.Tensor, offset: int) -> tuple:
        """(x_t, t) for a noisy classifier, (x_t, t, x̂0) for a DA classifier; noise at ``offset``."""
        if self.config.mode == "noisy":
            a, s = self.denoiser.schedule.coefficients(t, device=self.device)
            return diffuse(x, a, s, seed=self.config.seed, offset=offset), t
        x_t, x_hat = diffuse_and_denoise(self.denoiser, x, t, seed=self.config.seed, net=self.fast_net,
                                         offset=offset, return_noisy=True)
        return x_t, t, x_hat

    def semi_supervised_batch(self, step: int) -> dict:
        """This rank's shard of step ``step``: labeled inputs + labels, and (with the consistency term or PU)
        the unlabeled images at t and at t'. Noise offsets: labeled, unlabeled and fresh-ε t' streams apart."""
        from diffaug_fast.train.ssl import partner_timesteps

        config, b = self.config, self.config.batch_size
        epoch, k = divmod(step, self.steps_per_epoch)
        gen = _step_generator(config.seed, step)
        shard = slice(self.rank * b // self.world, (self.rank + 1) * b // self.world)
        last = len(self.denoiser.schedule) - 1
        per_image = self.images[0].numel()
        lab = self.labeled[torch.randint(len(self.labeled), (b,), generator=gen)][shard]
        x = crop_flip(self.images[lab], crop_flip_params(b, gen)[shard]).to(self.device)
        t_lab = sample_timesteps(b, 0, last, gen)[shard].to(self.device)
        y = torch.ones(len(lab), dtype=torch.long) if config.pu else self.labels[lab]
        out = {"labeled": self._noisy_inputs(x, t_lab, (3 * step * b + shard.start) * per_image),
               "y": y.to(self.device)}
        if not (config.consistency or config.pu):
            return out
        unl = _epoch_order(len(self.images), config.seed, epoch)[k * b:(k + 1) * b][shard]
        u = crop_flip(self.images[unl], crop_flip_params(b, gen)[shard]).to(self.device)
        t_u = sample_timesteps(b, 0, last, gen)
        t_pair = partner_timesteps(t_u, config.tc_radius, last, gen)
        offset = ((3 * step + 1) * b + shard.start) * per_image
        out["unlabeled"] = self._noisy_inputs(u, t_u[shard].to(self.device), offset)
        if config.consistency:
            pair_offset = offset if config.tc_noise == "same" else ((3 * step + 2) * b + shard.start) * per_image
            out["pair"] = self._noisy_inputs(u, t_pair[shard].to(self.device), pair_offset)
        return out

    def semi_supervised_step(self, batch: dict) -> dict:
        """CE on labeled (SSL) or nnPU (PU), plus the ramped temporal-consistency KL on unlabeled pairs; one
        forward pass over everything, so batch-norm statistics see all of it."""
        from diffaug_fast.train.ssl import binary_score, nnpu_risk, rampup, temporal_consistency

        config = self.config
        parts = [batch["labeled"]] + [batch[k] for k in ("unlabeled", "pair") if k in batch]
        sizes = [len(p[0]) for p in parts]
        inputs = [torch.cat(group) for group in zip(*parts)]
        self.train_model.train()
        with autocast(self.device, self.amp):
            logits = self.forward(inputs[0].contiguous(memory_format=torch.channels_last), *inputs[1:])
        chunks = logits.float().split(sizes)
        stats = {}
        if config.pu:
            loss, risk = nnpu_risk(binary_score(chunks[0]), binary_score(chunks[1]), self.prior, loss=config.pu_loss)
            stats.update(pu_risk=float(risk), acc=float((binary_score(chunks[0]) > 0).float().mean()))
        else:
            loss = F.cross_entropy(chunks[0], batch["y"])
            stats["acc"] = float((chunks[0].argmax(1) == batch["y"]).float().mean())
        if "pair" in batch:
            tc, kept = temporal_consistency(chunks[-2], chunks[-1], batch["unlabeled"][1], batch["pair"][1],
                                            target=config.tc_target, threshold=config.tc_threshold)
            loss = loss + config.tc_weight * rampup(self.step, config.tc_rampup) * tc
            stats.update(tc_kl=float(tc.detach()), tc_kept=float(kept.float().mean()))
        self._optimize(loss)
        return {"loss": float(loss.detach()), **stats}

    def _optimize(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        if self.ema is not None:
            with torch.no_grad():
                for pe, pm in zip(self.ema.state_dict().values(), self.model.state_dict().values()):
                    if pe.is_floating_point():
                        pe.lerp_(pm, 1 - self.config.ema_decay)
                    else:
                        pe.copy_(pm)

    def train_step(self, inputs: tuple, y: torch.Tensor) -> dict:
        self.train_model.train()
        first = inputs[0].contiguous(memory_format=torch.channels_last) if inputs[0].dim() == 4 else inputs[0]
        with autocast(self.device, self.amp):
            logits = self.forward(first, *inputs[1:])
        per_example = F.cross_entropy(logits.float(), y, reduction="none")
        halves = 2 if self.config.diffaug == "on" and self.config.mode == "clean" else 1
        loss = per_example.mean() * halves  # = CE(clean) + CE(DiffAug): each half is a mean over its images
        self._optimize(loss)
        correct = (logits.argmax(1) == y).float()
        return {"loss": float(loss.detach()), "acc": float(correct.mean()),
                **({"acc_clean": float(correct[:len(y) // 2].mean()), "acc_diffaug": float(correct[len(y) // 2:].mean())}
                   if halves == 2 else {})}

    def eval_model(self) -> torch.nn.Module:
        return (self.ema or self.model).eval()


def _iter_chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


@torch.inference_mode()
def accuracy(model, images, labels, *, batch: int = 1000, device="cpu") -> float:
    model.eval()
    correct = 0
    for sl in _iter_chunks(len(images), batch):
        correct += int((model(images[sl].to(device)).argmax(1).cpu() == labels[sl]).sum())
    return correct / max(len(images), 1)


@torch.inference_mode()
def evaluate(model, denoiser, images, labels, *, timesteps, noise_std: float, seed: int = 0, batch: int = 250,
             fast_net=None, device="cpu", progress: bool = False) -> dict:
    """Clean accuracy; per-t DiffAug accuracy and DiffAug-Ensemble accuracy (clean and Gaussian-noised inputs)."""
    from diffaug_fast.augment import DiffAugEnsemble

    model.eval()
    result = {"clean_acc": accuracy(model, images, labels, device=device), "eval_images": len(images)}
    noisy = (images + noise_std * torch.randn(images.shape, generator=torch.Generator().manual_seed(seed + 1)))
    result["noisy_acc"] = accuracy(model, noisy, labels, device=device)
    if denoiser is None or not timesteps:
        return result
    ensemble = DiffAugEnsemble(model, denoiser, timesteps, seed=seed, max_batch=batch * len(timesteps))
    if fast_net is not None:
        ensemble.fast_net = fast_net
    for name, inputs in (("", images), ("noisy_", noisy)):
        probs = []
        chunks = list(_iter_chunks(len(inputs), batch))
        for sl in tqdm(chunks, desc=f"DiffAug-Ensemble ({name or 'clean '}test)", disable=not progress,
                       leave=False):
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
    from diffaug_fast.train.ssl import f1_score

    model.eval()
    steps = len(denoiser.schedule)
    edges = torch.linspace(0, steps, buckets + 1).long()
    gen = torch.Generator().manual_seed(seed + 2)
    rows = []
    for k in range(buckets):
        predictions = []
        for sl in _iter_chunks(len(images), batch):
            x0 = images[sl].to(device)
            t = torch.randint(int(edges[k]), int(edges[k + 1]), (len(x0),), generator=gen).to(device)
            a, s = denoiser.schedule.coefficients(t, device=device)
            x_t = diffuse(x0, a, s, seed=seed + 1000 + k, offset=sl.start * x0[0].numel())
            predictions.append(model(x_t, t).argmax(1).cpu())
        pred = torch.cat(predictions)
        rows.append({"t_from": int(edges[k]), "t_to": int(edges[k + 1]) - 1,
                     "acc": float((pred == labels).float().mean()), **({"f1": f1_score(pred, labels)} if f1 else {})})
    result = {"acc_per_t_bucket": rows, "mean_acc_over_t": sum(r["acc"] for r in rows) / buckets,
              "eval_images": len(images)}
    if f1:
        result["mean_f1_over_t"] = sum(r["f1"] for r in rows) / buckets
    return result


def _install_interrupt_flag():
    flag = []
    try:
        previous = signal.signal(signal.SIGINT, lambda *_: flag.append(True))
    except ValueError:  # not the main thread: Ctrl-C handling is the caller's
        previous = None
    return flag, previous


def train_classifier(config: TrainConfig, out_dir: str | Path, *, data=None, test_data=None, progress: bool = True,
                     stop_after: int | None = None, evaluate_at_end: bool = True) -> dict:
    """Train (or resume from ``out_dir/checkpoint.pt``) and evaluate; returns the final metrics.

    ``data`` / ``test_data``: optional ``(images in [-1, 1], labels)``; default Fashion-MNIST.
    ``stop_after``: end this call after that many steps (a stand-in for an interruption).
    """
    from diffaug_fast.data import dataset_classes, load_dataset

    config.validate()
    out_dir = Path(out_dir)
    rank, _ = world()
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    shape = {"image_size": config.image_size, "channels": config.channels}
    data = data or load_dataset(config.data, "train", limit=config.train_limit, **shape)
    test_data = test_data or load_dataset(config.data, "test", **shape)
    job = _Job(config, out_dir, data, test_data, progress and rank == 0)
    job.resume()
    if rank == 0:
        (out_dir / "config.json").write_text(json.dumps(asdict(config), indent=2))
        names = dataset_classes(config.data)
        if config.pu:
            chosen = ", ".join(names[c] for c in config.positive if c < len(names))
            names = [f"negative (not {chosen})", f"positive ({chosen})"]
            (out_dir / "classes.json").write_text(json.dumps(names))
        elif len(names) == int(job.labels.max()) + 1:  # (not for tensors passed in by the caller with other labels)
            (out_dir / "classes.json").write_text(json.dumps(names))
        _truncate_log(out_dir / "metrics.jsonl", job.step)
    end = job.total_steps if stop_after is None else min(job.total_steps, job.step + stop_after)
    flag, previous = _install_interrupt_flag()
    log = open(out_dir / "metrics.jsonl", "a") if rank == 0 else None
    bar = tqdm(total=job.total_steps, initial=job.step, desc=f"train (DiffAug {config.diffaug})" if config.mode == "clean" else f"train ({config.mode} classifier)",
               disable=not job.progress, unit="step")
    start_time, seen = time.perf_counter(), 0
    try:
        while job.step < end:
            if config.ssl or config.pu:
                stats = job.semi_supervised_step(job.semi_supervised_batch(job.step))
                seen += config.batch_size
            else:
                inputs, y = job.batch(job.step)
                stats = job.train_step(inputs, y)
                seen += len(y) * job.world
            job.step += 1
            speed = seen / (time.perf_counter() - start_time)
            bar.update(1)
            bar.set_postfix(loss=f"{stats['loss']:.3f}", acc=f"{stats['acc']:.3f}", img_s=f"{speed:.0f}")
            if log and (job.step % config.log_every == 0 or job.step == end):
                log.write(json.dumps({"step": job.step, "epoch": job.step / job.steps_per_epoch,
                                      "lr": job.sched.get_last_lr()[0], "images_per_s": speed, **stats}) + "\n")
                log.flush()
            interrupted = bool(flag)
            if world()[1] > 1:  # every rank stops at the same step
                stop = torch.tensor([int(interrupted)])
                dist.all_reduce(stop)
                interrupted = bool(stop.item())
            if job.step % config.checkpoint_every == 0 or job.step == end or interrupted:
                job.save()
            if interrupted:
                raise KeyboardInterrupt
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        bar.close()
        if log:
            log.close()
    if job.step < job.total_steps or not evaluate_at_end or rank != 0:
        return {"step": job.step}
    n = config.eval_limit or len(job.test_images)
    if config.mode != "clean":
        metrics = evaluate_noisy(job.eval_model(), job.denoiser, job.test_images[:n], job.test_labels[:n],
                                 seed=config.seed, device=job.device, f1=config.pu)
        if config.ssl or config.pu:
            from diffaug_fast.train.ssl import disagreement

            metrics["tc_disagreement"] = disagreement(job.eval_model(), job.denoiser, job.test_images[:n],
                                                      radius=config.tc_radius, seed=config.seed, device=job.device)
            metrics["labeled_examples"] = len(job.labeled)
            if config.pu:
                metrics["prior"] = job.prior
        metrics.update(step=job.step, train_seconds_this_call=time.perf_counter() - start_time)
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        return metrics
    metrics = evaluate(job.eval_model(), job.denoiser, job.test_images[:n], job.test_labels[:n],
                       timesteps=config.de_timesteps, noise_std=config.noise_std, seed=config.seed,
                       fast_net=job.fast_net, device=job.device, progress=job.progress)
    metrics["clean_acc_full_test"] = accuracy(job.eval_model(), job.test_images, job.test_labels, device=job.device)
    metrics.update(step=job.step, train_seconds_this_call=time.perf_counter() - start_time)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint a resumed run restarts from, so the curves have no duplicates."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
    path.write_text("".join(ln + "\n" for ln in lines))


def _classifier_path(source: str | Path) -> Path:
    """A shipped classifier's name resolved to its weights file; any other source as a path."""
    from diffaug_fast.runs.weights import CLASSIFIERS, WEIGHTS_DIR

    name = str(source)
    return WEIGHTS_DIR / f"{CLASSIFIERS[name]}.safetensors" if name in CLASSIFIERS else Path(source)


def load_run_classifier(source: str | Path, device="cpu") -> tuple[torch.nn.Module, TrainConfig]:
    """A trained classifier in eval mode, with its training config. ``source`` is a ``diffaug-fast train`` run
    folder (EMA weights when it kept them), an ``export-classifier`` ``.safetensors`` file, or the name of a
    classifier shipped with the package (``fmnist-classifier``)."""
    source = _classifier_path(source)
    if source.suffix == ".safetensors":
        from safetensors.torch import load_file

        meta_path = source.with_suffix(".json")
        if not source.exists() or not meta_path.exists():
            raise FileNotFoundError(f"need both {source} and {meta_path} (written by `diffaug-fast export-classifier`)")
        meta = json.loads(meta_path.read_text())
        config, weights = TrainConfig(**meta["config"]), load_file(str(source))
    else:
        ckpt, cfg_path = source / "checkpoint.pt", source / "config.json"
        if not checkpoint_exists(ckpt) or not cfg_path.exists():
            raise FileNotFoundError(f"{source} holds no `diffaug-fast train` run (need config.json and checkpoint.pt)")
        config = TrainConfig(**json.loads(cfg_path.read_text()))
        state = load_verified(ckpt)
        weights = state["ema"] if state.get("ema") else state["model"]
    denoiser = load_denoiser(config.denoiser, device) if config.mode != "clean" else None
    num_classes = weights["fc.weight" if "fc.weight" in weights else "net.fc.weight"].shape[0]
    model = build_model(config, denoiser, num_classes=num_classes, in_channels=config.channels,
                        image_size=config.image_size)
    model.load_state_dict(weights)
    return model.to(device).eval(), config


def classifier_classes(source: str | Path, num_classes: int) -> list[str]:
    """Class names saved with a run folder or export (``classes.json`` / the export's json); else ``0 … n-1``."""
    source = _classifier_path(source)
    if source.suffix == ".safetensors":
        names = json.loads(source.with_suffix(".json").read_text()).get("classes")
    else:
        names = json.loads((source / "classes.json").read_text()) if (source / "classes.json").exists() else None
    return list(names) if names and len(names) == num_classes else [str(i) for i in range(num_classes)]


def export_classifier(run_dir: str | Path, weights: str | Path) -> Path:
    """Write a run's classifier (EMA weights when kept) as ``weights`` (.safetensors) + a ``.json`` config."""
    from safetensors.torch import save_file

    weights = Path(weights)
    if weights.suffix != ".safetensors":
        raise ValueError(f"argument 'weights' must end in .safetensors, got {weights}")
    model, config = load_run_classifier(run_dir)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    n = state["fc.weight" if "fc.weight" in state else "net.fc.weight"].shape[0]
    weights.parent.mkdir(parents=True, exist_ok=True)
    meta = {"config": asdict(config), "classes": classifier_classes(run_dir, n), "source": str(run_dir)}
    metrics = Path(run_dir) / "metrics.json"
    if metrics.exists():
        meta["metrics"] = json.loads(metrics.read_text())
    tmp = weights.with_suffix(".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, weights)
    weights.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return weights
