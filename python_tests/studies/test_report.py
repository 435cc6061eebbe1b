"""Collect, report and index without any training: hand-written run folders and runs.json, hand-computed means,
intervals and verdicts."""
import json
import math
from pathlib import Path

import pytest

from diffaug_fast.studies.collect import collect, lookup, read_runs
from diffaug_fast.studies.index import README_BEGIN, README_END, update_readme, write_index
from diffaug_fast.studies.report import summarize, write_report
from diffaug_fast.studies.spec import load_study
from diffaug_fast.studies.verdicts import two_proportion_interval

T_975_2 = 4.302652729911275  # t_{0.975, 2}

STUDY = '''
[study]
name = "{name}"
title = "{title}"
question = "Does a beat b?"
seeds = [0, 1, 2]
options = ["--max-steps", "3"]
budget = "hand-written numbers"
notes = ["a note"]
{extra}

[variants.b]
label = "bee"
options = ["--diffaug", "off"]
[variants.a]
label = "ay"

[metrics.acc_val]
label = "val accuracy"
key = "clean_acc_val"

[metrics.acc]
label = "test accuracy"
key = "clean_acc_full_test"
images = 10000

[metrics.loss]
label = "loss"
key = "loss"
percent = false

[[comparisons]]
claim = "a beats b by a lot"
a = "a"
b = "b"
metric = "acc"
direction = "greater"

[[comparisons]]
claim = "a keeps b's accuracy"
a = "a"
b = "b"
metric = "acc_val"
direction = "keeps"
margin = 0.5

[[comparisons]]
claim = "a beats b on val"
a = "a"
b = "b"
metric = "acc_val"
direction = "greater"

[[comparisons]]
claim = "a lowers the loss"
a = "a"
b = "b"
metric = "loss"
direction = "less"

[selection]
metric = "acc_val"
among = ["b", "a"]
rule = "highest mean; within 2.5 points the earlier wins"
tolerance = 2.5
'''


def _study(folder: Path, name="demo", title="Demo study", extra=""):
    path = folder / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(STUDY.format(name=name, title=title, extra=extra))
    return load_study(path)


def _run(variant, seed, acc, val, loss, **facts):
    return {"variant": variant, "seed": seed, "metrics": {"acc": acc, "acc_val": val, "loss": loss},
            "facts": {"folder": f"runs/studies/demo/{variant}/seed{seed}", "machine": "2-core test CPU",
                      "commit": "abc1234", "seconds": 1.0, "val_size": 100, "predates_split": False, **facts}}


# a - b: acc [2, 3, 4] points (supported), val [1, 2, 3] points (keeps within 0.5: supported; greater: inconclusive),
# loss [-0.2, -0.25, -0.3] (less: mean -0.25, sd 0.05, high -0.126 -> supported)
RUNS = [_run("b", 0, 0.80, 0.90, 1.0), _run("b", 1, 0.81, 0.91, 1.1), _run("b", 2, 0.82, 0.92, 1.2, predates_split=True),
        _run("a", 0, 0.82, 0.91, 0.8), _run("a", 1, 0.84, 0.93, 0.85), _run("a", 2, 0.86, 0.95, 0.9),
        _run("a", 7, 0.10, 0.10, 9.0),  # a seed the study does not declare: ignored
        _run("w", 0, 0.99, 0.99, 0.1)]  # a variant it no longer declares: ignored


def _write_runs(folder: Path, runs=RUNS, name="demo"):
    (folder / name).mkdir(parents=True, exist_ok=True)
    (folder / name / "runs.json").write_text(json.dumps({"study": name, "runs": runs}))
    return folder / name


def test_summary_by_hand(tmp_path):
    s = summarize(_study(tmp_path), RUNS)
    assert s["runs"] == 6 and s["runs_ignored"] == 2 and s["predating_split"] == ["b seed 2"]
    acc = next(m for m in s["metrics"] if m["name"] == "acc")
    b, a = acc["variants"]
    assert b["variant"] == "b" and b["values"] == {"0": 80.0, "1": 81.0, "2": 82.0}
    assert b["mean"] == pytest.approx(81.0) and b["std"] == pytest.approx(1.0)
    assert a["mean"] == pytest.approx(84.0) and a["std"] == pytest.approx(2.0)
    half = T_975_2 * 2.0 / math.sqrt(3)
    assert a["interval"]["low"] == pytest.approx(84.0 - half, abs=1e-4)
    loss = next(m for m in s["metrics"] if m["name"] == "loss")
    assert loss["variants"][1]["mean"] == pytest.approx(0.85) and loss["variants"][1]["std"] == pytest.approx(0.05)

    greater, keeps, greater_val, less = s["comparisons"]
    half = T_975_2 * 1.0 / math.sqrt(3)  # differences [2, 3, 4] and [1, 2, 3]: sd 1
    assert greater["differences"] == pytest.approx([2.0, 3.0, 4.0])
    assert greater["interval"]["mean"] == pytest.approx(3.0) and greater["interval"]["low"] == pytest.approx(3 - half,
                                                                                                             abs=1e-4)
    assert greater["verdict"] == "supported"  # low 0.516 > 0
    assert keeps["differences"] == pytest.approx([1.0, 2.0, 3.0]) and keeps["verdict"] == "supported"  # -0.484 > -0.5
    assert greater_val["verdict"] == "inconclusive" and greater_val["seeds_to_resolve"] == 4  # t(3)/2 = 1.59 < 2
    assert less["differences"] == pytest.approx([-0.2, -0.25, -0.3]) and less["verdict"] == "supported"

    sel = s["selection"]  # b 91.00, a 93.00: a is best, b is within 2.5 points and comes first in `among`
    assert sel["means"] == {"b": pytest.approx(91.0), "a": pytest.approx(93.0)} and sel["chosen"] == "b"
    assert sel["seeds"] == [0, 1, 2]


def test_selection_without_tolerance_picks_the_best(tmp_path):
    study = _study(tmp_path)
    import dataclasses

    study = dataclasses.replace(study, selection=dataclasses.replace(study.selection, tolerance=0.0))
    assert summarize(study, RUNS)["selection"]["chosen"] == "a"


def test_sign_flips_a_lower_is_better_keeps(tmp_path):
    study = _study(tmp_path)
    import dataclasses

    keeps_loss = dataclasses.replace(study.comparisons[0], metric="loss", direction="keeps", margin=0.05, sign=-1)
    study = dataclasses.replace(study, comparisons=(keeps_loss,))
    c = summarize(study, RUNS)["comparisons"][0]
    assert c["differences"] == pytest.approx([0.2, 0.25, 0.3])  # b - a: the loss went down by this much
    assert c["verdict"] == "supported"


def test_one_seed_uses_the_interval_over_images(tmp_path):
    study = _study(tmp_path)
    c = summarize(study, [r for r in RUNS if r["seed"] == 0])["comparisons"]
    assert c[0]["method"].endswith("one run") and c[0]["interval"]["n"] == 1  # acc declares 10 000 images
    assert c[1]["interval"] is None and c[1]["verdict"] == "inconclusive"  # acc_val declares none


def test_report_files_from_runs_json_alone(tmp_path):
    study = _study(tmp_path / "experiments")
    results = _write_runs(tmp_path / "results")
    readme = write_report(study, results)
    text = readme.read_text()
    assert text.splitlines()[0] == ("Generated by `diffaug-fast study report experiments/demo.toml` from runs.json; "
                                    "do not edit.")
    assert "# Demo study" in text and "Does a beat b?" in text and "**budget**: hand-written numbers" in text
    assert "**machine**: 2-core test CPU" in text and "- a note" in text
    assert "**runs predating the validation split** (trained on every training image): b seed 2" in text
    assert "| b | bee | `--diffaug off` |" in text and "| a | ay | – |" in text
    assert "| metric | b | a |" in text
    assert "| val accuracy (%) | 91.00 ± 1.00 (3) | 93.00 ± 2.00 (3) |" in text
    assert "| loss | 1.1 ± 0.1 (3) | 0.85 ± 0.05 (3) |" in text
    assert "| a beats b by a lot (a vs b) | test accuracy | 0, 1, 2 | +3.00 [+0.52, +5.48] | **supported** |" in text
    assert "| a keeps b's accuracy (within 0.5 points) (a vs b) |" in text
    assert "**inconclusive** (~4 seeds at this spread)" in text
    assert "**b** (means: b 91.00, a 93.00)" in text
    summary = json.loads((results / "study.json").read_text())
    assert summary["comparisons"][0]["verdict"] == "supported"
    assert sorted(p.name for p in results.glob("*.png")) == ["acc.png", "acc_val.png", "loss.png"]


def test_report_without_runs_json_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="runs.json does not exist: run `diffaug-fast study run"):
        write_report(_study(tmp_path), tmp_path / "results" / "demo")


def _folder(root, variant, seed, metrics, config):
    folder = root / "demo" / variant / f"seed{seed}"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_collect_keeps_stored_runs_whose_folders_are_gone(tmp_path):
    study = _study(tmp_path)
    results = _write_runs(tmp_path / "results", [_run("b", 0, 0.5, 0.5, 1.0), _run("a", 0, 0.5, 0.5, 1.0)])
    runs = tmp_path / "runs"
    _folder(runs, "a", 0, {"clean_acc_full_test": 0.7, "clean_acc_val": 0.6, "train_seconds_this_call": 12.5},
            {"data": {"val_size": 100}})  # a stored run that is also here: the folder wins
    _folder(runs, "a", 1, {"clean_acc_full_test": 0.8}, {"data": {}})  # a new one, predating the split
    (runs / "demo" / "b" / "seed1").mkdir(parents=True)  # unfinished: no metrics.json
    path = collect(study, runs, tmp_path / "results")
    stored = {(r["variant"], r["seed"]): r for r in read_runs(path)}
    assert sorted(stored) == [("a", 0), ("a", 1), ("b", 0)]
    assert stored[("b", 0)] == _run("b", 0, 0.5, 0.5, 1.0)  # kept as it was
    assert stored[("a", 0)]["metrics"] == {"acc": 0.7, "acc_val": 0.6}  # no "loss" key in the file: absent
    facts = stored[("a", 0)]["facts"]
    assert facts["folder"] == (runs / "demo" / "a" / "seed0").as_posix() and facts["seconds"] == 12.5
    assert facts["val_size"] == 100 and facts["predates_split"] is False and facts["machine"]
    assert stored[("a", 1)]["facts"]["predates_split"] is True
    assert [(r["variant"], r["seed"]) for r in read_runs(path)] == [("b", 0), ("a", 0), ("a", 1)]  # declared order
    assert json.loads((results / "runs.json").read_text())["study"] == "demo"


def test_collect_writes_nothing_without_runs(tmp_path):
    assert collect(_study(tmp_path), tmp_path / "runs", tmp_path / "results") is None
    assert not (tmp_path / "results").exists()


def test_lookup_dotted_keys():
    data = {"certify": {"0.5": {"certified_acc": {"0.25": 0.7, "0.5": 0.6}}}, "rows": [{"acc": 0.1}, {"acc": 0.2}]}
    assert lookup(data, "certify.0.5.certified_acc.0.5") == 0.6
    assert lookup(data, "rows.1.acc") == 0.2
    for bad in ("certify.0.75", "rows.2.acc", "rows.x", "certify.0.5.certified_acc.0.5.more"):
        with pytest.raises(KeyError):
            lookup(data, bad)


def test_index_from_two_reports(tmp_path):
    experiments, results = tmp_path / "experiments", tmp_path / "docs" / "results"
    for name, title in (("alpha", "Alpha study"), ("beta", "Beta study")):
        study = _study(experiments, name, title)
        runs = [{**r, "facts": {**r["facts"]}} for r in RUNS]
        write_report(study, _write_runs(results, runs, name))
    _study(experiments, "gamma", "Gamma study")  # declared, not yet run
    _study(experiments, "hidden", "Hidden", extra="listed = false")
    out = write_index(experiments, results, tmp_path / "docs" / "results.md")
    text = out.read_text()
    assert text.startswith("Generated by `diffaug-fast study index")
    assert "| a beats b by a lot | [alpha](results/alpha/README.md) | 1 of 6 before the split | test accuracy | 3 | " \
           "+3.00 [+0.52, +5.48] | **supported** |" in text
    assert "| a beats b by a lot | [beta](results/beta/README.md) |" in text
    assert text.count("| a keeps b's accuracy (within 0.5 points) |") == 2
    assert "- [Alpha study](results/alpha/README.md) (`experiments/alpha.toml`, 6 runs): hand-written numbers" in text
    assert "- **Gamma study** (`experiments/gamma.toml`): hand-written numbers. Not yet reported." in text
    assert "Hidden" not in text


def test_readme_claims_block_says_the_verdicts_and_nothing_else(tmp_path):
    experiments, results = tmp_path / "experiments", tmp_path / "docs" / "results"
    for name, extra in (("alpha", "headline = true"), ("beta", "")):
        write_report(_study(experiments, name, name.title(), extra=extra),
                     _write_runs(results, [{**r, "facts": {**r["facts"]}} for r in RUNS], name))
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n{README_BEGIN}\nan old, stronger sentence\n{README_END}\nafter\n")
    update_readme(readme, experiments, results)
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n") and text.endswith(f"{README_END}\nafter\n")
    block = text.split(README_BEGIN)[1].split(README_END)[0].strip().splitlines()
    assert "an old, stronger sentence" not in text
    assert block[0] == ("- **supported**: a beats b by a lot — test accuracy: +3.00 [+0.52, +5.48], 3 seed(s), runs 1 of "
                        "6 before the split ([alpha](docs/results/alpha/README.md))")
    assert all("[alpha]" in line for line in block[:-1])  # only the headline study's claims, one line each
    assert block[-1].startswith("- The other studies' ") and "[docs/results.md](docs/results.md)" in block[-1]
    update_readme(readme, experiments, results)
    assert readme.read_text() == text  # regenerating changes nothing
    readme.write_text("no block")
    with pytest.raises(ValueError, match="argument --readme: .* has no claims block"):
        update_readme(readme, experiments, results)


def test_index_of_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="argument --experiments: .* is not a folder"):
        write_index(tmp_path / "nope", tmp_path, tmp_path / "results.md")


# ---- two metrics of the same runs (metric_b) ------------------------------------------------------------------

TWO_METRICS = '''
[study]
name = "pair"
title = "Two metrics"
question = "Does x beat y on the same runs?"
seeds = [0, 1, 2]
budget = "hand-written numbers"

[variants.v]
[variants.w]
options = ["--diffaug", "off"]

[metrics.x]
label = "x accuracy"
key = "x"
images = 1000

[metrics.y]
label = "y accuracy"
key = "y"
images = 500

[[comparisons]]
claim = "x beats y on the same runs"
a = "v"
b = "v"
metric = "x"
metric_b = "y"
direction = "greater"

[[comparisons]]
claim = "v's x beats w's y"
a = "v"
b = "w"
metric = "x"
metric_b = "y"
direction = "greater"
'''


def _pair_study(folder: Path):
    path = folder / "pair.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TWO_METRICS)
    return load_study(path)


def _pair_run(variant, seed, x, y):
    return {"variant": variant, "seed": seed, "metrics": {"x": x, "y": y},
            "facts": {"folder": f"runs/studies/pair/{variant}/seed{seed}", "machine": "2-core test CPU",
                      "commit": "abc1234", "seconds": 1.0, "val_size": 100, "predates_split": False}}


# v: x [0.50, 0.52, 0.54], y [0.48, 0.49, 0.50] -> x - y = [2, 3, 4] points: mean 3, sd 1, 3 ± 2.484 -> supported.
# w: y [0.45, 0.47, 0.46] -> v's x - w's y = [5, 5, 8] points: mean 6, sd sqrt(3) -> supported.
PAIR_RUNS = [_pair_run("v", 0, 0.50, 0.48), _pair_run("v", 1, 0.52, 0.49), _pair_run("v", 2, 0.54, 0.50),
             _pair_run("w", 0, 0.90, 0.45), _pair_run("w", 1, 0.90, 0.47), _pair_run("w", 2, 0.90, 0.46)]


def test_two_metrics_of_the_same_runs_pair_by_seed(tmp_path):
    same, cross = summarize(_pair_study(tmp_path), PAIR_RUNS)["comparisons"]
    assert same["a"] == same["b"] == "v" and same["metric"] == "x" and same["metric_b"] == "y"
    assert same["differences"] == pytest.approx([2.0, 3.0, 4.0])
    half = T_975_2 * 1.0 / math.sqrt(3)
    assert same["interval"]["mean"] == pytest.approx(3.0)
    assert same["interval"]["low"] == pytest.approx(3.0 - half, abs=1e-4)  # 0.516 > 0
    assert same["interval"]["high"] == pytest.approx(3.0 + half, abs=1e-4)
    assert same["verdict"] == "supported" and same["method"] == "Student t over 3 seeds, paired by seed"
    assert cross["differences"] == pytest.approx([5.0, 5.0, 8.0])  # v's x against w's y, seed by seed
    half = T_975_2 * math.sqrt(3) / math.sqrt(3)
    assert cross["interval"]["low"] == pytest.approx(6.0 - half, abs=1e-4) and cross["verdict"] == "supported"


def test_two_metrics_sign_flips_the_difference(tmp_path):
    import dataclasses

    study = _pair_study(tmp_path)
    lower = dataclasses.replace(study.comparisons[0], direction="less", sign=-1)  # y - x: [-2, -3, -4]
    c = summarize(dataclasses.replace(study, comparisons=(lower,)), PAIR_RUNS)["comparisons"][0]
    assert c["differences"] == pytest.approx([-2.0, -3.0, -4.0]) and c["verdict"] == "supported"


def test_two_metrics_of_one_run_get_no_interval_over_images(tmp_path):
    """The one-run interval over images is for independent samples; two metrics of one run share their images."""
    same, cross = summarize(_pair_study(tmp_path), [r for r in PAIR_RUNS if r["seed"] == 0])["comparisons"]
    assert same["seeds"] == [0] and same["differences"] == pytest.approx([2.0])
    assert same["interval"] is None and same["method"] == "none" and same["verdict"] == "inconclusive"
    assert same["reason"] == "one run: a paired comparison of two metrics on the same images needs seeds"
    assert same["seeds_to_resolve"] is None
    # two variants: the runs are separate, each side over its own metric's images (1 000 for x, 500 for y)
    expected = two_proportion_interval(0.50, 0.45, 1000, 500)
    assert cross["method"].endswith("one run") and cross["interval"]["n"] == 1
    assert cross["interval"]["low"] == pytest.approx(100 * expected.low, abs=1e-4)
    assert cross["interval"]["high"] == pytest.approx(100 * expected.high, abs=1e-4)


def test_two_metrics_without_a_run_say_so(tmp_path):
    runs = [_pair_run("v", 0, 0.5, 0.5)]
    del runs[0]["metrics"]["y"]
    same = summarize(_pair_study(tmp_path), runs)["comparisons"][0]
    assert same["seeds"] == [] and same["verdict"] == "inconclusive" and same["reason"] == "no run has both metrics"


def test_report_labels_two_metrics_a_vs_b(tmp_path):
    study = _pair_study(tmp_path / "experiments")
    results = tmp_path / "results" / "pair"
    results.mkdir(parents=True)
    (results / "runs.json").write_text(json.dumps({"study": "pair", "runs": PAIR_RUNS}))
    text = write_report(study, results).read_text()
    assert "| x beats y on the same runs (v) | x accuracy vs y accuracy | 0, 1, 2 | +3.00 [+0.52, +5.48] | " \
           "**supported** |" in text
    assert "| v's x beats w's y (v vs w) | x accuracy vs y accuracy | 0, 1, 2 |" in text
    assert 'Where the metric reads "A vs B", the claim compares two metrics' in text
    assert json.loads((results / "study.json").read_text())["comparisons"][0]["metric_b"] == "y"
    assert sorted(p.name for p in results.glob("*.png")) == ["x.png", "y.png"]  # both compared metrics
