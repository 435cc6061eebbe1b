"""Classifier training, the main job of ``diffaug-fast train``.

Clean mode: each step takes a global batch of B images, applies crop + flip (optionally AugMix) and, with
DiffAug on, appends their DiffAug versions; the loss is CE(clean) + CE(DiffAug) over one forward pass of the
2B images (``--diffaug only`` keeps the DiffAug half, ``off`` is the baseline). Noisy / DA modes train
time-conditioned classifiers of x_t for guidance; ``--ssl`` / ``--pu`` train them semi-supervised.

The batches (train/batches.py) are keyed by (seed, step), so resuming is bit-exact and data-parallel ranks
see exactly what one process would; the loop (train/loop.py) does the rest.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from diffaug_fast.augment import amp_dtype, autocast
from diffaug_fast.config import TrainConfig, to_dict
from diffaug_fast.data import ArraySource, dataset_classes
from diffaug_fast.devices import run_device
from diffaug_fast.models.build import build_model
from diffaug_fast.models.pretrained import load_init
from diffaug_fast.ops.backends import warn_if_emulated
from diffaug_fast.runs import files
from diffaug_fast.runs.provenance import write_records
from diffaug_fast.runs.weights import load_denoiser
from diffaug_fast.train import loop
from diffaug_fast.train.losses import clean_classifier_loss
from diffaug_fast.train.batches import Batches, adds_copies
from diffaug_fast.train.step_data import StepSpec, evaluation_images, loader_workers, training_source, validation_images
from diffaug_fast.train.checks import check_denoiser, check_same_run, needs_denoiser
from diffaug_fast.train.distributed import world
from diffaug_fast.train.image_shape import resolve_image_shape, with_image_shape
from diffaug_fast.train.evaluation import ensemble_denoiser, evaluate_trained, fast_net_for
from diffaug_fast.train.optim import EMA, ema_start_warning, lr_factor, make_optimizer
from diffaug_fast.train.ssl import labeled_subset, semi_supervised_loss


class ClassifierTrainer:
    """One run's training state; ``loop.run`` drives it."""

    def __init__(self, config: TrainConfig, source):
        self.config = config
        labels = source.labels
        self.rank, self.world = world()
        opt = config.optim
        if opt.batch_size % self.world:
            raise ValueError(f"argument --batch-size ({opt.batch_size}) must be divisible by the number of "
                             f"processes ({self.world})")
        self.device = run_device(config.run.device)
        self.steps_per_epoch = len(source) // opt.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"argument --batch-size ({opt.batch_size}) exceeds the {len(source)} training images")
        self.total_steps = config.total_steps(len(source))
        torch.manual_seed(config.run.seed)
        num_classes = int(labels.max()) + 1
        labeled, self.prior = None, None
        if config.semi_supervised:
            labeled, num_classes = self._semi_supervised_setup(labels, num_classes)
        self.num_classes = num_classes
        self.denoiser = (load_denoiser(config.diffaug.denoiser, self.device, config.diffaug.denoiser_flags)
                         if needs_denoiser(config) else None)
        # auto --image-size / --channels from the data (a folder's size: the denoiser's); config.json keeps them
        self.image_shape = resolve_image_shape(config, source, self.denoiser)
        self.config = config = with_image_shape(config, self.image_shape)
        image_shape = self.image_shape.chw
        t_max = check_denoiser(config, self.denoiser, image_shape) if self.denoiser is not None else 0
        # the closing evaluation's denoiser (a --de-denoiser is loaded and checked now, not after training)
        self.ensemble_denoiser = ensemble_denoiser(config, self.denoiser, image_shape, self.device)
        # seeded here, after the denoisers load (building one draws random weights before its checkpoint replaces
        # them): a seed gives the same initial classifier with --diffaug off, on or only, so runs pair by seed
        torch.manual_seed(config.run.seed)
        self.model = build_model(config.model.mode, config.model.arch, denoiser=self.denoiser,
                                 num_classes=num_classes, in_channels=image_shape[0], image_size=image_shape[-1],
                                 norm=config.model.norm, fusion=config.model.fusion).to(self.device)
        if config.model.init is not None:  # pretrained weights (resuming then loads the checkpoint over them)
            line = load_init(self.model, config.model.init, config.model.arch)
            if self.rank == 0:
                print(line)
        if self.world > 1 and self.device.type == "cuda" and config.model.norm == "batch":
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.model = self.model.to(memory_format=torch.channels_last)
        self.ema = EMA(self.model, opt.ema_decay) if opt.ema_decay else None
        warning = ema_start_warning(opt.ema_decay, self.total_steps)
        if warning and self.rank == 0:
            print(warning, file=sys.stderr)
        self.opt = make_optimizer(self.model.parameters(), opt.optimizer, opt.lr, opt.weight_decay,
                                  nesterov=opt.nesterov)
        step_every = opt.lr_step_epochs * self.steps_per_epoch if opt.lr_step_epochs else None
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lr_factor(opt.lr_schedule, opt.warmup_steps, self.total_steps, step_every=step_every))
        self.amp = amp_dtype(config.run.amp, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        self.fast_net = fast_net_for(config, self.denoiser, self.device)
        if self.rank == 0:
            for flag, dtype in (("--amp", self.amp), ("--denoiser-precision", getattr(self.fast_net, "dtype", None))):
                warn_if_emulated(flag, dtype, self.device)
        semi = config.semi
        spec = StepSpec(config.run.seed, opt.batch_size, self.rank, self.world, len(source), image_shape[-1],
                        image_shape[0], crop=config.data.crop, diffaug_view=config.data.diffaug_view,
                        augmix=config.diffaug.augmix, augmix_views=2 if config.diffaug.jsd else 0,
                        t_min=config.diffaug.t_min, t_max=t_max,
                        last=len(self.denoiser.schedule) - 1 if self.denoiser is not None else 0,
                        noisy=config.model.mode != "clean", semi=config.semi_supervised,
                        unlabeled=config.semi_supervised and (semi.consistency or semi.pu), radius=semi.tc_radius)
        self.batches = Batches(config, source, spec, denoiser=self.denoiser, fast_net=self.fast_net, device=self.device,
                               total_steps=self.total_steps, workers=loader_workers(config, source), labeled=labeled)
        self.train_model = self.model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        compile_classifier = config.run.compile == "on" or (config.run.compile == "auto" and
                                                             self.device.type == "cuda")
        self.forward = torch.compile(self.train_model) if compile_classifier else self.train_model
        step_denoises = config.model.mode != "clean" or config.diffaug.mode != "off"  # off: only the evaluation
        compiled = (["the denoiser"] if self.fast_net is not None and self.fast_net.compiled and step_denoises
                    else []) + \
            (["the classifier"] if compile_classifier else [])
        self.compiles = " and ".join(compiled) or None  # the loop shows a status line for the first step
        self.step = 0

    def _semi_supervised_setup(self, labels, num_classes: int):
        semi, seed = self.config.semi, self.config.run.seed
        if not semi.pu:
            return labeled_subset(labels, semi.labels_per_class, seed), num_classes
        bad = [c for c in semi.positive if not 0 <= c < num_classes]
        if bad:
            raise ValueError(f"argument --positive {bad}: class indices must lie in 0..{num_classes - 1}")
        positive = torch.isin(labels, torch.tensor(semi.positive))
        self.prior = semi.prior if semi.prior is not None else float(positive.float().mean())
        return labeled_subset(labels, semi.labels_per_class, seed, classes=semi.positive), 2

    # --- the loop's interface -----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                "scaler": self.scaler.state_dict(), "ema": self.ema.state_dict() if self.ema else None,
                "torch_rng": torch.get_rng_state(), "step": self.step, "config": to_dict(self.config),
                "num_classes": self.num_classes}

    def load_state_dict(self, state: dict) -> None:
        check_same_run(state["config"], self.config, "the checkpoint", getattr(self, "run_dir", None))
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["torch_rng"])
        self.step = state["step"]

    def log_fields(self) -> dict:
        return {"epoch": self.step / self.steps_per_epoch, "lr": self.sched.get_last_lr()[0]}

    def train_step(self) -> dict:
        if self.config.semi_supervised:
            return self._semi_supervised_step(self.batches.semi_supervised(self.step))
        inputs, y = self.batches.supervised(self.step)
        logits = self._logits(inputs)
        shard, batches = self.batches.spec.shard, self.batches
        clean = shard.stop - shard.start  # this rank's clean images come first, then AugMix views, then copies
        views = batches.augmix_views
        loss = clean_classifier_loss(logits, y, clean=clean, batch=batches.batch, world=self.world,
                                     copies_share=batches.diffaug_images < batches.batch, augmix_views=views,
                                     jsd_weight=self.config.diffaug.jsd, copy_weight=self.config.diffaug.weight)
        self._optimize(loss)
        correct = (logits.argmax(1) == y).float()
        copies = correct[clean * (1 + views):]
        return {"loss": float(loss.detach()), "acc": float(torch.cat([correct[:clean], copies]).mean()),
                **({"acc_clean": float(correct[:clean].mean()), "acc_diffaug": float(copies.mean())}
                   if len(copies) and self.config.diffaug.mode == "on" else {})}

    # --- one step -----------------------------------------------------------------------------------------------
    def _logits(self, inputs) -> torch.Tensor:
        self.train_model.train()
        first = inputs[0].contiguous(memory_format=torch.channels_last) if inputs[0].dim() == 4 else inputs[0]
        with autocast(self.device, self.amp):
            return self.forward(first, *inputs[1:])

    def _semi_supervised_step(self, batch: dict) -> dict:
        # one forward pass over labeled + unlabeled + partner images, so batch norm sees all of them
        parts = [batch["labeled"]] + [batch[k] for k in ("unlabeled", "pair") if k in batch]
        sizes = [len(p[0]) for p in parts]
        logits = self._logits([torch.cat(group) for group in zip(*parts)])
        loss, stats = semi_supervised_loss(logits.float().split(sizes), batch, self.config.semi, step=self.step,
                                           prior=self.prior)
        self._optimize(loss)
        return {"loss": float(loss.detach()), **stats}

    def _optimize(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        if self.ema is not None:
            self.ema.update(self.model)

    def eval_model(self) -> torch.nn.Module:
        return (self.ema.module if self.ema else self.model).eval()


def write_classes(out_dir: Path, config: TrainConfig, labels: torch.Tensor) -> None:
    names = dataset_classes(config.data.source)
    if config.semi.pu:
        chosen = ", ".join(names[c] for c in config.semi.positive if c < len(names))
        names = [f"negative (not {chosen})", f"positive ({chosen})"]
    elif len(names) != int(labels.max()) + 1:  # tensors passed in by the caller with other labels
        return
    files.write_json(out_dir / files.CLASSES, names)


def images_per_step(trainer: ClassifierTrainer):
    """A function of the step: the images the classifier sees in it (for the progress bar's images per second) —
    the batch, its AugMix views, and the DiffAug copies on the steps that get them (none after --diffaug-until's
    boundary)."""
    config, batches = trainer.config, trainer.batches
    plain = config.optim.batch_size * (1 + batches.augmix_views)
    copies = batches.diffaug_images if adds_copies(config) and not config.semi_supervised else 0
    return lambda step: plain + (copies if step < batches.diffaug_steps else 0)


def train_classifier(config: TrainConfig, out_dir: str | Path, *, data=None, test_data=None, progress: bool = True,
                     stop_after: int | None = None, evaluate_at_end: bool = True) -> dict:
    """Train (or resume from ``out_dir``'s checkpoint) and evaluate; returns the final metrics.

    ``data`` / ``test_data``: optional ``(images in [-1, 1], labels)``; default: ``config.data``.
    ``stop_after``: end this call after that many steps (a stand-in for an interruption).
    """
    config.validate()
    out_dir = Path(out_dir)
    rank, _ = world()
    if rank == 0:
        files.make_folder(out_dir)
    source = ArraySource(*data, []) if data else training_source(config)
    labels = source.labels
    trainer = ClassifierTrainer(config, source)
    config = trainer.config  # --image-size / --channels resolved
    if rank == 0:
        print(f"images {trainer.image_shape.describe()}")
    trainer.run_dir = out_dir  # resuming compares the denoiser and data with the ones this folder recorded
    loop.resume(trainer, out_dir)
    if rank == 0:
        files.write_json(out_dir / files.CONFIG, to_dict(config))
        write_records(out_dir, config.data.source, config.diffaug.denoiser if trainer.denoiser is not None else None,
                      getattr(config.diffaug, "denoiser_flags", None))
        write_classes(out_dir, config, labels)
    mode = config.model.mode
    desc = f"train (DiffAug {config.diffaug.mode})" if mode == "clean" else f"train ({mode} classifier)"
    start = time.perf_counter()
    loop.run(trainer, out_dir, desc=desc, images_per_step=images_per_step(trainer), log_every=config.run.log_every,
             checkpoint_every=config.run.checkpoint_every, progress=progress, stop_after=stop_after)
    if trainer.step < trainer.total_steps or not evaluate_at_end or rank != 0:
        return {"step": trainer.step}
    test_data = test_data or evaluation_images(config)
    denoiser = trainer.ensemble_denoiser
    fast_net = trainer.fast_net if denoiser is trainer.denoiser else fast_net_for(config, denoiser, trainer.device)
    metrics = evaluate_trained(config, trainer.eval_model(), denoiser, *test_data, device=trainer.device,
                               fast_net=fast_net, progress=progress, labeled=trainer.batches.labeled,
                               prior=trainer.prior, val_data=validation_images(config) if data is None else None)
    if trainer.fast_net is not None:  # what --denoiser-precision auto chose on this machine
        metrics["denoiser_precision"] = trainer.fast_net.precision_name
    metrics.update(step=trainer.step, train_seconds_this_call=time.perf_counter() - start,
                   **trainer.image_shape.record())
    files.write_json(out_dir / files.METRICS, metrics)
    return metrics
