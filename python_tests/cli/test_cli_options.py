"""The command line generated from the typed configs: defaults in help, presets < --config < flags in both
directions, --debug anywhere, internal errors kept apart from user errors, and re-evaluating a finished run."""
import json
import subprocess
import sys

import pytest
import torch

from diffaug_fast import pretrained
from diffaug_fast.cli import build_parser, main
from diffaug_fast.config import PRESETS, TrainConfig, to_dict, train_config
from diffaug_fast.config.options import leaves

CLI = [sys.executable, "-m", "diffaug_fast.cli"]


def _options(argv):
    from diffaug_fast.cli import _options as options

    args = build_parser().parse_args(argv)
    return options(args)


def test_every_option_has_help_with_its_default():
    text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for leaf in leaves(TrainConfig):
        assert leaf.flag in text, leaf.flag
    for action in build_parser()._subparsers._group_actions[0].choices["train"]._actions:
        if action.option_strings and action.dest not in ("help", "debug"):
            assert action.help and "(default: " in action.help, action.option_strings


def test_preset_then_config_file_then_flags(tmp_path):
    config, _ = _options(["train", "--preset", "paper"])
    assert config.model.arch == "wrn-16-4" and config.optim.ema_decay == 0.999 and config.eval.limit is None
    saved = to_dict(train_config("quick", augmix=True, lr=0.2, epochs=2))
    (tmp_path / "c.json").write_text(json.dumps(saved))
    config, _ = _options(["train", "--config", str(tmp_path / "c.json")])
    assert config.diffaug.augmix is True and config.optim.lr == 0.2 and config.optim.epochs == 2
    config, _ = _options(["train", "--config", str(tmp_path / "c.json"), "--no-augmix", "--lr", "0.3"])
    assert config.diffaug.augmix is False and config.optim.lr == 0.3 and config.optim.epochs == 2
    assert PRESETS["quick"] == {}


def test_earlier_flat_config_files_still_load():
    flat = json.loads(open(__import__("diffaug_fast").runs.weights.WEIGHTS_DIR.joinpath(
        "fmnist_classifier.json")).read())["config"]
    assert "lr" in flat and "optim" not in flat  # the flat layout of earlier versions
    from diffaug_fast.config import train_config_from_dict

    config = train_config_from_dict(flat)
    assert config.optim.epochs == flat["epochs"] and config.model.arch == flat["model"]


@pytest.mark.slow  # a CLI subprocess
def test_debug_after_the_subcommand_shows_the_traceback():
    out = subprocess.run(CLI + ["train", "--lr", "nan", "--debug"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "Traceback" in out.stderr and "--lr" in out.stderr


@pytest.mark.slow  # a CLI subprocess
def test_internal_error_exits_1_with_a_summary_and_a_log(tmp_path):
    code = ("import sys; import diffaug_fast.eval.guidance as g; from diffaug_fast.cli import main\n"
            "def broken(o):\n    raise RuntimeError('kernel exploded')\n"
            "g.sample_command = broken\n"
            f"sys.exit(main(['sample', '--num', '1', '--out', {str(tmp_path)!r}]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "internal error: RuntimeError: kernel exploded" in lines[0]
    log = tmp_path / "error.log"
    assert str(log) in lines[0] and "Traceback" in log.read_text() and "kernel exploded" in log.read_text()


def test_user_error_is_not_an_internal_error(capsys):
    assert main(["train", "--epochs", "0"]) == 2
    assert "argument --epochs must be > 0" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_only_reevaluates_without_touching_training_state(tmp_path, monkeypatch):
    run = tmp_path / "run"
    base = ["train", "--preset", "quick", "--train-limit", "128", "--batch-size", "64", "--eval-limit", "20", "--de-timesteps", "0",
            "--compile", "off", "--out", str(run)]
    assert main(base) == 0
    checkpoint = (run / "checkpoint.pt").read_bytes()
    first = json.loads((run / "metrics.json").read_text())
    assert set(first["acc_per_t"]) == {"0"}
    assert first["denoiser_precision"] in ("fp32", "bf16")  # what auto chose here, recorded and reported
    assert f"denoiser `fmnist` at {first['denoiser_precision']})" in (run / "report.md").read_text()
    assert main(["train", "--evaluate-only", "--out", str(run), "--eval-limit", "30", "--de-timesteps", "0,100",
                 "--compile", "off"]) == 0
    again = json.loads((run / "metrics.json").read_text())
    assert again["eval_images"] == 30 and set(again["acc_per_t"]) == {"0", "100"}
    assert again["clean_acc_full_test"] == first["clean_acc_full_test"]  # the same weights
    assert (run / "checkpoint.pt").read_bytes() == checkpoint
    assert json.loads((run / "config.json").read_text())["eval"]["de_timesteps"] == [0, 100]
    assert again["denoiser_precision"] == first["denoiser_precision"]  # kept: it describes the training
    # no evaluation flag: the run's own evaluation settings (the last ones given), not the default preset's
    assert main(["train", "--evaluate-only", "--out", str(run), "--compile", "off"]) == 0
    kept = json.loads((run / "metrics.json").read_text())
    assert kept["eval_images"] == 30 and set(kept["acc_per_t"]) == {"0", "100"}
    # another test-time denoiser: the closing evaluation gets fmnist-v's weights, and the run records the name
    import diffaug_fast.train.evaluation as evaluation

    seen = []
    real = evaluation.evaluate_trained
    monkeypatch.setattr(evaluation, "evaluate_trained", lambda config, model, denoiser, *a, **k: (
        seen.append(denoiser), real(config, model, denoiser, *a, **k))[1])
    assert main(["train", "--evaluate-only", "--out", str(run), "--eval-limit", "30", "--de-timesteps", "0,600",
                 "--de-denoiser", "fmnist-v", "--compile", "off"]) == 0
    other = json.loads((run / "metrics.json").read_text())
    assert other["de_denoiser"] == "fmnist-v" and again["de_denoiser"] == "fmnist"
    expected = pretrained("fmnist-v").state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in seen[0].state_dict().items()) and len(expected) > 0
    assert not torch.equal(pretrained("fmnist").state_dict()[next(iter(expected))], next(iter(expected.values())))
    # and the re-evaluated run still resumes as the same run (evaluation settings are not its identity)
    assert main(base[:-2] + ["--out", str(run), "--resume", "--eval-limit", "30", "--de-timesteps", "0,100"]) == 0
    assert torch.equal(torch.tensor(json.loads((run / "metrics.json").read_text())["step"]), torch.tensor(2))


def test_preset_help_states_the_default_presets_budget(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    default = PRESETS["default"]
    assert f"default ({default['epochs']} epochs, DiffAug on 1/{round(1 / default['diffaug_fraction'])} of each" in text


def test_help_shows_what_a_run_without_the_flag_gets(capsys):
    """Issue 37: `train --help` said --epochs 1, --diffaug-fraction 1.0, --diffaug-weight 1.0 while a run without
    those flags (the default preset) gets 4, 0.125, 0.25. Every value shown must be the one the run gets."""
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    got = _options(["train"])[0]
    for leaf in leaves(TrainConfig):
        value = got
        for name in leaf.path:
            value = getattr(value, name)
        if leaf.key in PRESETS["default"]:
            assert f"(default: {value}, from --preset default)" in text, leaf.flag
    assert "(default: 4, from --preset default)" in text and "(default: 0.25, from --preset default)" in text
    assert "(default: 0.125, from --preset default)" in text


def test_max_steps_is_a_fixed_step_budget(tmp_path):
    """`--max-steps N` trains exactly N steps whatever --epochs says; the schedule spans them; resume keeps it."""
    run = tmp_path / "run"
    common = ["train", "--preset", "quick", "--diffaug", "off", "--train-limit", "256", "--batch-size", "32",
              "--de-timesteps", "", "--eval-limit", "16", "--compile", "off", "--warmup-steps", "0",
              "--log-every", "1", "--out", str(run)]
    assert main(common + ["--max-steps", "3", "--epochs", "5"]) == 0
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3] and json.loads((run / "metrics.json").read_text())["step"] == 3
    assert lines[-1]["lr"] < lines[0]["lr"]  # cosine over 3 steps, not over 5 epochs of 8 steps
    assert json.loads((run / "config.json").read_text())["optim"]["max_steps"] == 3
    assert "3 step(s) (--max-steps)" in (run / "report.md").read_text()
    two_epochs = tmp_path / "two"
    assert main([*common[:-1], str(two_epochs), "--max-steps", "20"]) == 0  # past one epoch of 8 steps
    assert json.loads((two_epochs / "metrics.json").read_text())["step"] == 20
