"""Trains the same short Fashion-MNIST runs with two versions of the package and writes each run's final
weights' SHA-256, to check that streaming the data (issue 15) changed no number of a run.

    python benchmarks/streaming_equivalence.py OUT.json      # with the installed package
The stored docs/results/streaming_equivalence/before.json / after.json were made with the commit before the change (866e042) and after it."""
import hashlib
import json
import sys
import tempfile

import torch

from diffaug_fast.config import train_config
from diffaug_fast.runs.checkpoint import load_verified
from diffaug_fast.train.classifier import train_classifier

BASE = dict(train_limit=256, batch_size=32, checkpoint_every=100, log_every=1, warmup_steps=2, eval_limit=20,
            de_timesteps=[], compile="off", epochs=2)
RUNS = {
    "diffaug_on_augmix": dict(augmix=True),
    "diffaug_only": dict(diffaug="only"),
    "noisy": dict(mode="noisy"),
    "da": dict(mode="da"),
    "ssl_da": dict(mode="da", ssl=True, labels_per_class=5),
    "pu_noisy": dict(mode="noisy", pu=True, positive=[0, 2], labels_per_class=5, tc_noise="fresh"),
}


def digest(state: dict) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


if __name__ == "__main__":
    results = {}
    for name, overrides in RUNS.items():
        with tempfile.TemporaryDirectory() as out:
            torch.manual_seed(0)
            train_classifier(train_config("quick", **{**BASE, **overrides}), out, progress=False,
                             evaluate_at_end=False)
            saved = load_verified(f"{out}/checkpoint.pt")
            results[name] = {"step": saved["step"], "weights_sha256": digest(saved["model"])}
            print(name, results[name], flush=True)
    json.dump({"settings": BASE, "runs": RUNS, "results": results}, open(sys.argv[1], "w"), indent=1)
