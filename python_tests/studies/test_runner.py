"""`diffaug-fast study run` on experiments/smoke.toml end to end (four 3-step runs, two cheap evaluations), in a
temporary folder: runs made and collected, a second call runs nothing, a cut run resumes, a failed run is reported
while the others finish, a folder made with other options is refused; and the plan's order and waits, without
running anything."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from diffaug_fast.errors import DiffAugError
from diffaug_fast.studies.runner import check, plan
from diffaug_fast.studies.spec import load_study

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "experiments" / "smoke.toml"
CLI = [sys.executable, "-m", "diffaug_fast.cli"]
RUNS = Path("runs/studies/smoke")
SLOW = pytest.mark.slow  # the smoke study's four 3-step runs: about 2 minutes on 2 busy cores


def _study_run(cwd, study=SMOKE, *more):
    return subprocess.run(CLI + ["study", "run", str(study), "--results", "results", *more], cwd=cwd,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke study run once, two at a time (about 1 to 2 minutes on 2 busy cores)."""
    base = tmp_path_factory.mktemp("smoke")
    out = _study_run(base, SMOKE, "--jobs", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    return base, out


def _copy(smoke, tmp_path) -> Path:
    shutil.copytree(smoke[0], tmp_path / "copy")
    return tmp_path / "copy"


def _variant_study(folder: Path, change) -> Path:
    """experiments/smoke.toml changed by ``change`` (text -> text), saved under the same name in ``folder``."""
    path = folder / "smoke.toml"
    path.write_text(change(SMOKE.read_text()))
    return path


@SLOW
def test_the_smoke_study_makes_and_collects_every_run(smoke):
    base, out = smoke
    assert "study smoke: 4 of 4 runs and 2 evaluations to do, up to 2 at once" in out.stdout
    for k in range(1, 7):
        assert f"[{k}/6] " in out.stdout
    assert "[1/6] baseline seed 0: training (log: runs/studies/smoke/baseline/seed0.log)" in out.stdout
    for variant in ("baseline", "diffaug"):
        for seed in (0, 1):
            folder = base / RUNS / variant / f"seed{seed}"
            assert (folder / "metrics.json").is_file() and (base / RUNS / variant / f"seed{seed}.log").is_file()
            recorded = json.loads((folder / "study_run.json").read_text())
            assert recorded["machine"] and recorded["command"][:3] == ["train", "--seed", str(seed)]
            assert (folder / "ood" / "eval.json").is_file() == (variant == "diffaug")
    runs = json.loads((base / "results" / "smoke" / "runs.json").read_text())["runs"]
    assert [(r["variant"], r["seed"]) for r in runs] == [("baseline", 0), ("baseline", 1), ("diffaug", 0),
                                                         ("diffaug", 1)]
    for r in runs:
        wanted = {"clean_val", "clean_test", "noisy_test"} | ({"ood_auroc"} if r["variant"] == "diffaug" else set())
        assert set(r["metrics"]) == wanted and all(0 <= v <= 1 for v in r["metrics"].values())
        assert r["facts"]["val_size"] == 100 and r["facts"]["predates_split"] is False
        assert r["facts"]["folder"] == f"runs/studies/smoke/{r['variant']}/seed{r['seed']}"
    assert "numbers: results/smoke/runs.json" in out.stdout


@SLOW
def test_a_second_call_runs_nothing_and_the_report_goes_where_asked(smoke):
    base, _ = smoke
    before = (base / RUNS / "baseline" / "seed0" / "metrics.json").stat().st_mtime_ns
    out = _study_run(base)
    assert out.returncode == 0, out.stderr
    assert "all 4 runs and their evaluations are finished; nothing to run" in out.stdout and "[1/" not in out.stdout
    assert (base / RUNS / "baseline" / "seed0" / "metrics.json").stat().st_mtime_ns == before
    report = subprocess.run(CLI + ["study", "report", str(SMOKE), "--results", "results"], cwd=base,
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    readme = (base / "results" / "smoke" / "README.md").read_text()
    assert "| DiffAug raises accuracy on noisy test images" in readme and "## Selection (on validation)" in readme
    assert (base / "results" / "smoke" / "noisy_test.png").is_file()
    assert not (REPO / "docs" / "results" / "smoke").exists()  # smoke output never lands in the checkout


@SLOW
def test_a_cut_run_resumes_and_a_failed_run_does_not_stop_the_others(smoke, tmp_path):
    base = _copy(smoke, tmp_path)
    (base / RUNS / "diffaug" / "seed1" / "metrics.json").unlink()  # stopped after its last checkpoint
    study = _variant_study(base, lambda text: text.replace(
        "[[evaluations]]", '[variants.broken]\noptions = ["--denoiser", "/nonexistent.safetensors"]\n\n'
                           "[[evaluations]]"))
    out = _study_run(base, study, "--jobs", "2")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "diffaug seed 1: resuming" in out.stdout and "diffaug seed 1: resuming: finished" in out.stdout
    assert (base / RUNS / "diffaug" / "seed1" / "metrics.json").is_file()
    assert "baseline seed" not in out.stdout  # finished runs are not touched
    for seed in (0, 1):
        assert (f"broken seed {seed}: training FAILED (exit 2): diffaug-fast: error: argument --denoiser: "
                f"/nonexistent.safetensors does not exist") in out.stderr
        assert f"(log: runs/studies/smoke/broken/seed{seed}.log)" in out.stderr
    assert "2 of 3 failed; the others finished" in out.stderr and "Traceback" not in out.stderr
    runs = json.loads((base / "results" / "smoke" / "runs.json").read_text())["runs"]
    assert ("diffaug", 1) in [(r["variant"], r["seed"]) for r in runs] and len(runs) == 4


@SLOW
def test_a_folder_made_with_other_options_is_refused(smoke, tmp_path):
    base = _copy(smoke, tmp_path)
    study = _variant_study(base, lambda text: text.replace('"--max-steps", "3"', '"--max-steps", "4"'))
    before = sorted(p.name for p in (base / RUNS / "baseline").iterdir())
    out = _study_run(base, study)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert ("4 existing run folder(s) were made with other options than the study declares: run baseline seed 0 "
            "(runs/studies/smoke/baseline/seed0): --max-steps is 3 in its config.json, the study declares 4") in lines[0]
    assert "[1/" not in out.stdout and sorted(p.name for p in (base / RUNS / "baseline").iterdir()) == before


@SLOW
def test_passthrough_options_are_not_held_against_existing_runs(smoke, tmp_path):
    base = _copy(smoke, tmp_path)
    out = _study_run(base, SMOKE, "--", "--compile", "on")
    assert out.returncode == 0 and "nothing to run" in out.stdout, out.stderr


# --- the plan, without running anything -------------------------------------------------------------------------
DEPENDENT = '''
[study]
name = "dep"
title = "t"
question = "q"
seeds = [0, 1]
budget = "b"
[variants.baseline]
options = ["--diffaug", "off"]
[variants.default]
[[evaluations]]
name = "corr"
command = "eval"
args = ["{run}", "--out", "{out}", "--baseline", "{run:baseline}/corr", "--seed", "{seed}"]
output = "eval.json"
[[evaluations]]
name = "gpu"
command = "eval"
args = ["{run}"]
output = "eval.json"
optional = true
'''


def test_plan_order_placeholders_and_waits(tmp_path):
    (tmp_path / "dep.toml").write_text(DEPENDENT)
    study = load_study(tmp_path / "dep.toml")
    tasks = plan(study, "runs")
    assert [t.key for t in tasks] == [("run", "baseline", 0), ("eval", "corr", "baseline", 0), ("run", "default", 0),
                                      ("eval", "corr", "default", 0), ("run", "baseline", 1),
                                      ("eval", "corr", "baseline", 1), ("run", "default", 1),
                                      ("eval", "corr", "default", 1)]
    corr = tasks[3]
    assert corr.argv == ["eval", "runs/dep/default/seed0", "--out", "runs/dep/default/seed0/corr", "--baseline",
                         "runs/dep/baseline/seed0/corr", "--seed", "0"]
    assert corr.needs == [("run", "default", 0), ("run", "baseline", 0), ("eval", "corr", "baseline", 0)]
    assert tasks[0].argv == ["train", "--seed", "0", "--out", "runs/dep/baseline/seed0", "--diffaug", "off"]
    assert tasks[0].log == Path("runs/dep/baseline/seed0.log")
    # baseline seed 0 finished and evaluated: nothing waits for it any more, and it is not planned again
    done = tmp_path / "runs" / "dep" / "baseline" / "seed0"
    (done / "corr").mkdir(parents=True)
    (done / "metrics.json").write_text("{}")
    (done / "corr" / "eval.json").write_text("{}")
    tasks = plan(study, tmp_path / "runs", optional=["gpu"])
    keys = [t.key for t in tasks]
    assert ("run", "baseline", 0) not in keys and ("eval", "corr", "baseline", 0) not in keys
    assert ("eval", "gpu", "baseline", 0) in keys  # the optional one, asked for
    assert next(t for t in tasks if t.key == ("eval", "corr", "default", 0)).needs == [("run", "default", 0)]


def test_a_resumable_run_gets_resume(tmp_path):
    (tmp_path / "dep.toml").write_text(DEPENDENT)
    study = load_study(tmp_path / "dep.toml")
    folder = tmp_path / "runs" / "dep" / "default" / "seed1"
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"x")
    task = next(t for t in plan(study, tmp_path / "runs", ["--device", "cpu"]) if t.key == ("run", "default", 1))
    assert task.argv[5:] == ["--resume", "--device", "cpu"] and task.what == "default seed 1: resuming"


def test_an_unknown_optional_evaluation_is_an_error(tmp_path):
    (tmp_path / "dep.toml").write_text(DEPENDENT)
    with pytest.raises(DiffAugError, match="argument --optional: certify is not an optional evaluation of .*; "
                                           "expected all or some of gpu"):
        plan(load_study(tmp_path / "dep.toml"), "runs", optional=["certify"])


def test_options_a_command_would_refuse_are_refused_before_anything_runs(tmp_path):
    (tmp_path / "dep.toml").write_text(DEPENDENT.replace('options = ["--diffaug", "off"]',
                                                         'options = ["--diffaug", "of"]'))
    with pytest.raises(DiffAugError, match="variant baseline's options: argument --diffaug: invalid choice: 'of'"):
        check(load_study(tmp_path / "dep.toml"), tmp_path / "runs")
    (tmp_path / "dep.toml").write_text(DEPENDENT.replace('options = ["--diffaug", "off"]',
                                                         'options = ["--learning-rate", "0.1"]'))
    with pytest.raises(DiffAugError, match="variant baseline's options: unrecognized arguments: --learning-rate 0.1"):
        check(load_study(tmp_path / "dep.toml"), tmp_path / "runs")


def test_mismatches_read_the_runs_own_config(tmp_path):
    """The option-by-option comparison, on hand-written config.json files (no run): a train run's sections and a
    train-denoiser run's flat config; what the caller passes after -- and what a run resolves itself are not held
    against it."""
    from dataclasses import asdict

    from diffaug_fast.config import DenoiserConfig, to_dict, train_config
    from diffaug_fast.studies.checks import mismatches

    run = tmp_path / "train"
    run.mkdir()
    config = train_config("default", max_steps=3, diffaug="off", seed=1, compile="on")
    (run / "config.json").write_text(json.dumps(to_dict(config)))
    assert mismatches("train", run, ["--max-steps", "3", "--diffaug", "off", "--seed", "1"], []) == []
    assert mismatches("train", run, ["--max-steps", "3", "--seed", "2", "--compile", "off"], ["--compile", "on"]) == [
        "--diffaug is 'off' in its config.json, the study declares 'on'",  # not declared: what a run gets without it
        "--seed is 1 in its config.json, the study declares 2"]
    assert mismatches("train", run, ["--max-steps", "3", "--diffaug", "off", "--seed", "1", "--device", "cpu"],
                      []) == ["--device is 'auto' in its config.json, the study declares 'cpu'"]  # declared: compared
    assert mismatches("train", run, ["--preset", "quick", "--max-steps", "3", "--diffaug", "off", "--seed", "1"],
                      []) == ["--epochs is 4 in its config.json, the study declares 1",
                              "--diffaug-fraction is 0.125 in its config.json, the study declares 1.0",
                              "--diffaug-weight is 0.25 in its config.json, the study declares 1.0"]

    den = tmp_path / "den"
    den.mkdir()
    (den / "config.json").write_text(json.dumps({**asdict(DenoiserConfig(steps=50)), "parametrization": "v",
                                                 "image_size": 28, "channels": 1, "unet": {"channels": 32}}))
    assert mismatches("train-denoiser", den, ["--steps", "50", "--parametrization", "auto", "--seed", "0"], []) == []
    assert mismatches("train-denoiser", den, ["--steps", "60", "--lr", "0.002", "--seed", "0"], []) == [
        "--steps is 50 in its config.json, the study declares 60"]
