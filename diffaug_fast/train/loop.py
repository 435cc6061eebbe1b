"""The one training loop every trainer runs: progress bar, metrics log, checkpoint cadence, exact resume,
Ctrl-C or SIGTERM (finish the step, save, stop) and, across data-parallel processes, stopping at the same step.

A trainer is any object with ``step`` / ``total_steps`` ints, ``train_step() -> dict`` (one step at
``step``; the loop then advances ``step``), ``state_dict()`` / ``load_state_dict(state)`` (everything a
bit-exact resume needs; ``load_state_dict`` refuses a checkpoint of other settings) and
``log_fields() -> dict`` (extra columns of a metrics line, e.g. epoch and learning rate). A trainer whose
first step compiles names what in ``compiles`` (e.g. "the denoiser"): that step runs under a status line with
Ctrl-C and SIGTERM deferred until it ends (ops/compiling.py: the compiler processes are not killed mid-link).
"""
from __future__ import annotations

import json
import math
import signal
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from diffaug_fast.errors import DiffAugError, TrainingStopped, stop_status
from diffaug_fast.ops.compiling import STOP_SIGNALS, stop_signals_deferred
from diffaug_fast.runs import files
from diffaug_fast.runs.checkpoint import checkpoint_exists, load_verified, save_atomic
from diffaug_fast.train.distributed import collective_device, world


def resume(trainer, out_dir: Path) -> bool:
    """Load ``out_dir``'s checkpoint into ``trainer`` when there is one; True if it did."""
    path = Path(out_dir) / files.CHECKPOINT
    if not checkpoint_exists(path):
        return False
    trainer.load_state_dict(load_verified(path))
    return True


class _InterruptFlag:
    """SIGINT / SIGTERM (Ctrl-C; how schedulers and `kill` ask a job to stop) set a flag instead of raising, so
    the current step finishes and the checkpoint is consistent."""

    def __enter__(self):
        self.raised, self.signum, self.previous = False, None, {}
        try:
            for sig in STOP_SIGNALS:
                self.previous[sig] = signal.signal(sig, self._set)
        except ValueError:  # not the main thread: stopping is the caller's business
            self.previous = {}
        return self

    def _set(self, signum, _frame):
        self.raised, self.signum = True, self.signum or signum

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


def stopped_exit(out_dir: Path, exc: KeyboardInterrupt) -> SystemExit:
    """The one line a stopped training command prints, and its exit status."""
    how, status = stop_status(exc)
    path = Path(out_dir) / files.CHECKPOINT
    if checkpoint_exists(path):
        print(f"{how}: saved {path}; add --resume to continue", file=sys.stderr)
    else:
        print(f"{how} before the first checkpoint: nothing saved in {out_dir}; run again to start over", file=sys.stderr)
    return SystemExit(status)


def _agree(*flags: bool) -> list[bool]:
    """Each flag True on every process when it is True on any (all processes stop at the same step): one
    collective per step for all of them."""
    if world()[1] == 1:
        return list(flags)
    value = torch.tensor([int(f) for f in flags], device=collective_device())  # NCCL reduces CUDA tensors only
    dist.all_reduce(value)
    return [bool(v) for v in value.tolist()]


def _diverged(stats: dict, step: int) -> DiffAugError:
    """A NaN / Inf loss stops the run before the step is saved: the weights it leaves are no use, and every step
    after it would only write NaNs (agreed across processes, so that all of them stop together)."""
    return DiffAugError(f"training diverged: the loss is {stats.get('loss')} at step {step}; nothing from this step on "
                        "is saved (a lower --lr, or --diffaug-weight, may keep it finite)")


def _compiling_step(trainer, what: str, bar, rank: int, out_dir: Path) -> dict:
    """The first step of a compiled trainer: a status line; Ctrl-C / SIGTERM acknowledged at once and honoured when
    the compiler is done (the step is then saved), a second Ctrl-C abandons the step unsaved; the time it took."""
    if rank == 0:
        bar.write(f"compiling {what} (torch.compile, first step; a minute or so on a small CPU; Ctrl-C stops the run "
                  "once it is done)…", file=sys.stderr)

    def notice(signum, _count):  # on a line of its own, above the progress bar
        how = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        bar.write(f"{how}: stopping once compiling {what} finishes (cutting the compiler would leave broken kernels "
                  "in its cache), then saving this step; Ctrl-C again to abandon the step without saving it",
                  file=sys.stderr)

    def abandon():
        bar.write(f"interrupted again: abandoned the compiling step unsaved; {_kept(out_dir)}", file=sys.stderr)

    start = time.perf_counter()
    with stop_signals_deferred(notice if rank == 0 else lambda *_: None, abandon if rank == 0 else None):
        stats = trainer.train_step()
    if rank == 0:
        bar.write(f"first step (compiling {what}) took {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return stats


def _kept(out_dir: Path) -> str:
    """What a stopped run leaves behind, and what to do next."""
    path = Path(out_dir) / files.CHECKPOINT
    if checkpoint_exists(path):
        return f"{path} (the last checkpoint) is kept; add --resume to continue from it"
    return f"nothing saved in {out_dir}; run the same command again to start over"


def _restart_clock(bar, step: int) -> None:
    """Rate and ETA from here on: the compiling step's minute would make a 1 s/step run read 100 s/step."""
    bar.reset(total=bar.total)
    bar.initial = bar.n = bar.last_print_n = step
    bar.refresh()


def run(trainer, out_dir: str | Path, *, desc: str, images_per_step: int | Callable[[int], int],
        log_every: int = 10, checkpoint_every: int = 100, progress: bool = True, stop_after: int | None = None) -> int:
    """Train from ``trainer.step`` to ``trainer.total_steps`` (or ``stop_after`` more steps); returns the step
    reached. ``images_per_step``: a number, or a function of the step, for the images-per-second figure. Rank 0
    writes the log and the checkpoints; TrainingStopped (a KeyboardInterrupt) is raised after saving."""
    out_dir = Path(out_dir)
    rank = world()[0]
    end = trainer.total_steps if stop_after is None else min(trainer.total_steps, trainer.step + stop_after)
    log = None
    if rank == 0:
        files.truncate_log(out_dir / files.METRICS_LOG, trainer.step)
        log = files.append_log(out_dir / files.METRICS_LOG)
    bar = tqdm(total=trainer.total_steps, initial=trainer.step, desc=desc, unit="step",
               disable=not progress or rank != 0)
    start, seen = time.perf_counter(), 0
    try:
        with _InterruptFlag() as interrupt:
            first, compiles = True, getattr(trainer, "compiles", None)
            while trainer.step < end:
                compiling = first and compiles
                stats = _compiling_step(trainer, compiles, bar, rank, out_dir) if compiling else trainer.train_step()
                diverged, stop = _agree(not math.isfinite(stats.get("loss", 0.0)), interrupt.raised)
                if diverged:
                    raise _diverged(stats, trainer.step + 1)
                first = False
                trainer.step += 1
                seen += images_per_step(trainer.step - 1) if callable(images_per_step) else images_per_step
                speed = seen / (time.perf_counter() - start)
                if compiling:  # the compile is not a step's time: rate and ETA count from the next step
                    start, seen = time.perf_counter(), 0
                    _restart_clock(bar, trainer.step)
                else:
                    bar.update(1)
                bar.set_postfix({k: f"{stats[k]:.3f}" for k in ("loss", "acc") if k in stats} | {"img_s": f"{speed:.0f}"})
                if log and (trainer.step % log_every == 0 or trainer.step == end):
                    log.write(json.dumps({"step": trainer.step, **trainer.log_fields(), "images_per_s": speed,
                                          **stats}) + "\n")
                if rank == 0 and (trainer.step % checkpoint_every == 0 or trainer.step == end or stop):
                    save_atomic(trainer.state_dict(), out_dir / files.CHECKPOINT)
                if rank == 0 and hasattr(trainer, "after_step"):  # e.g. the denoiser's weight snapshots
                    trainer.after_step(out_dir)
                if stop:
                    raise TrainingStopped(interrupt.signum or signal.SIGINT)
    finally:
        bar.close()
        if log:
            log.close()
    return trainer.step
