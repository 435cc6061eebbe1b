"""``diffaug-fast train`` end to end: check the run folder, train (one process, --nproc local processes, or a
torchrun world), or only re-evaluate; then write the report and print the headline numbers."""
from __future__ import annotations

from pathlib import Path

from diffaug_fast.config import TrainCommand, TrainConfig
from diffaug_fast.devices import run_device
from diffaug_fast.errors import DiffAugError
from diffaug_fast.runs import files
from diffaug_fast.train.checks import check_resume
from diffaug_fast.train.classifier import train_classifier
from diffaug_fast.train.distributed import init_from_env, launch, world_rank
from diffaug_fast.train.loop import stopped_exit
from diffaug_fast.train.report import write_report


def train_worker(config, out, progress):
    """One data-parallel process of `train --nproc N` (picklable: spawned processes import it)."""
    train_classifier(config, out, progress=progress)


def train_command(config: TrainConfig, command: TrainCommand) -> dict:
    out = Path(command.out)
    if command.compare and not (Path(command.compare) / files.METRICS).exists():
        raise FileNotFoundError(f"argument --compare: no {files.METRICS} in {command.compare} (not a finished run)")
    run_device(config.run.device)  # an impossible --device fails now, not after loading data
    if command.evaluate_only:
        from diffaug_fast.config import to_dict
        from diffaug_fast.train.evaluation import evaluate_only

        if command.resume:
            raise DiffAugError("choose one of --resume (continue training) and --evaluate-only")
        metrics = evaluate_only(out, to_dict(config)["eval"])
    else:
        check_resume(out, command.resume)
        try:
            if command.nproc > 1:
                launch(train_worker, command.nproc, config, out, True, device=config.run.device)
            else:
                init_from_env(config.run.device)
                train_classifier(config, out)
        except KeyboardInterrupt as exc:
            raise stopped_exit(out, exc) from None
        if world_rank() != 0:
            return {}
        metrics = files.read_json(out / files.METRICS)
    report = write_report(out, command.compare)
    print_summary(config, metrics)
    print(f"report: {report}")
    return metrics


def print_summary(config: TrainConfig, metrics: dict) -> None:
    if "acc_per_t_bucket" in metrics:
        print(f"{config.model.mode} classifier: accuracy on noisy test images "
              f"({metrics.get('eval_subset', str(metrics['eval_images']) + ' test images')}) per t-bucket: "
              + ", ".join(f"{r['t_from']}-{r['t_to']}: {100 * r['acc']:.1f}%" for r in metrics["acc_per_t_bucket"])
              + f"; mean over t {100 * metrics['mean_acc_over_t']:.1f}%"
              + (f", mean F1 {metrics['mean_f1_over_t']:.3f}" if "mean_f1_over_t" in metrics else ""))
        if "tc_disagreement" in metrics:
            d = metrics["tc_disagreement"]
            print(f"top class changes between t and t' (|t - t'| <= {d['radius']}) on "
                  f"{100 * d['top_class_changed']:.1f}% of test images")
        return
    if "clean_acc_val" in metrics:
        print(f"validation accuracy {100 * metrics['clean_acc_val']:.2f}% ({metrics['val_images']} held-out training "
              f"images), noisy {100 * metrics['noisy_acc_val']:.2f}%; choose on these, not on the test numbers")
    print(f"test accuracy {100 * metrics['clean_acc_full_test']:.2f}% (full test set"
          + (f"; noisy {100 * metrics['noisy_acc_full_test']:.2f}%, mean of {len(metrics['noisy_acc_full_test_draws'])} "
             "draws" if "noisy_acc_full_test" in metrics else "") + "); on "
          f"{metrics.get('eval_subset', str(metrics['eval_images']) + ' test images')}: "
          f"clean {100 * metrics['clean_acc']:.2f}%"
          + (f", DiffAug-Ensemble {100 * metrics['de_acc']:.2f}%" if "de_acc" in metrics else "")
          + f"; noisy {100 * metrics['noisy_acc']:.2f}%"
          + (f", noisy + DiffAug-Ensemble {100 * metrics['noisy_de_acc']:.2f}%" if "noisy_de_acc" in metrics else ""))
