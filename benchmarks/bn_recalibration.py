"""Is DiffAug's clean-accuracy cost a BatchNorm-statistics mismatch? Recompute each run's BatchNorm running
statistics on clean training images only (25 600 images, cumulative average), then measure full-test accuracy again.

Usage: python benchmarks/bn_recalibration.py RUN [RUN ...] > docs/results/main_job/bn_recalibration.json
(a measurement on finished runs of the main job; it trains nothing)
"""
import json
import sys

import torch

from diffaug_fast.data import open_source
from diffaug_fast.eval.metrics import accuracy
from diffaug_fast.runs.classifiers import load_classifier
from diffaug_fast.train.step_data import evaluation_images


def recalibrate(model, images, n=25_600, batch=128, seed=0):
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the batches below
    model.train()
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
    with torch.no_grad():
        for i in range(0, n, batch):
            model(images[order[i:i + batch]])
    model.eval()


def main():
    source = open_source("fmnist", "train")
    train = source.batch(torch.arange(len(source)))
    train = train.float() / 127.5 - 1 if train.dtype == torch.uint8 else train
    rows = []
    for run in sys.argv[1:]:
        model, config = load_classifier(run)
        test_x, test_y = evaluation_images(config)
        before = accuracy(model, test_x, test_y)
        recalibrate(model, train)
        rows.append({"run": run, "diffaug": config.diffaug.mode, "seed": config.run.seed,
                     "clean_acc_full_test": before, "after_clean_bn_statistics": accuracy(model, test_x, test_y)})
        print(rows[-1], file=sys.stderr, flush=True)
    print(json.dumps({"what": __doc__.strip().splitlines()[0] + " " + __doc__.strip().splitlines()[1],
                      "machine": "2-core AMD EPYC, AVX-512 + avx512_bf16, torch 2.14.1 (2026-11-27)", "runs": rows},
                     indent=1))


if __name__ == "__main__":
    main()
