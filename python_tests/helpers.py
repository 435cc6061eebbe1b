"""Test-only helpers shared by test modules: ``from helpers import ...`` (python_tests/ is on sys.path, as for
``conftest``)."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

QUICK_CLEAN = dict(diffaug="off", train_limit=1024, batch_size=64, de_timesteps=[], compile="off", warmup_steps=2,
                   lr=0.1)


def train_quick_classifier(run_dir, **overrides) -> Path:
    """A small clean (no DiffAug) Fashion-MNIST classifier run in ``run_dir`` from the "quick" preset on 1024
    training images, not evaluated at the end: seconds on CPU. ``overrides`` are options by flag name."""
    from diffaug_fast.config import train_config
    from diffaug_fast.train.classifier import train_classifier

    config = train_config("quick", **{**QUICK_CLEAN, **overrides})
    train_classifier(config, run_dir, progress=False, evaluate_at_end=False)
    return Path(run_dir)


def fmnist_trainer(limit: int = 256, **options):
    """A ``ClassifierTrainer`` over the first ``limit`` Fashion-MNIST training images (in memory), batch 16, eager,
    from the default preset, for tests that look at single steps; ``options`` by flag name. The denoiser runs in fp32
    unless asked otherwise: these tests compare paths value by value, and ``auto`` means bf16 on CPUs with
    avx512_bf16."""
    from diffaug_fast.config import train_config
    from diffaug_fast.data import ArraySource, load_fashion_mnist
    from diffaug_fast.train.classifier import ClassifierTrainer

    base = dict(batch_size=16, compile="off", warmup_steps=2, de_timesteps=[], denoiser_precision="fp32")
    return ClassifierTrainer(train_config("default", **{**base, **options}),
                             ArraySource(*load_fashion_mnist("train", limit=limit), []))


def step_logits(trainer, step: int):
    """(logits, labels) of ``trainer``'s step ``step`` as its train_step will see them: the model in train mode,
    its batch-norm statistics put back afterwards so the step itself starts where the trainer stands."""
    import torch

    (inputs,), y = trainer.batches.supervised(step)
    model = trainer.model
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    with torch.no_grad():
        logits = model(inputs.contiguous(memory_format=torch.channels_last))
    model.load_state_dict(state)
    return logits, y


def python_without_extension(code: str):
    """Run ``code`` in a fresh Python whose import of the compiled extension fails (a missing or broken build),
    with the backend left to its default; returns the CompletedProcess."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "DIFFAUG_FAST_BACKEND"}
    return subprocess.run([sys.executable, "-c", "import sys; sys.modules['diffaug_fast._C'] = None\n" + code],
                          capture_output=True, text=True, env=env, timeout=300)


def stop_after_first_log(args, out, send) -> tuple[int, str]:
    """Start the ``train`` command ``args`` (one thread, its own process group), call ``send(proc)`` once the metrics
    log in ``out`` has a line; (exit status, stderr)."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    log = Path(out) / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (log.exists() and log.read_text().strip()):
        time.sleep(0.2)
    send(proc)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err
