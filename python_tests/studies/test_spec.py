"""Reading a study file: every declared study in experiments/ loads, and each kind of mistake is a ValueError that
names the file, the table / key and what was expected."""
import copy
from pathlib import Path

import pytest

from diffaug_fast.studies.spec import load_study, parse_study

REPO = Path(__file__).resolve().parents[2]

GOOD = {
    "study": {"name": "demo", "title": "A demo", "question": "Does it?", "seeds": [0, 1, 2], "command": "train",
              "options": ["--max-steps", "3"], "budget": "tiny"},
    "variants": {"baseline": {"label": "baseline", "options": ["--diffaug", "off"]}, "default": {"options": []}},
    "evaluations": [{"name": "ood", "command": "eval", "args": ["{run}", "--out", "{out}", "--baseline",
                                                                "{run:baseline}/ood", "--seed", "{seed}"],
                     "output": "eval.json", "variants": ["default"]}],
    "metrics": {"clean_val": {"key": "clean_acc_val", "images": 100},
                "ood": {"file": "ood/eval.json", "key": "ood.uniform.msp.auroc", "percent": True}},
    "comparisons": [{"claim": "c", "a": "default", "b": "baseline", "metric": "clean_val", "direction": "greater"},
                    {"claim": "k", "a": "default", "b": "baseline", "metric": "clean_val", "direction": "keeps",
                     "margin": 0.5},
                    {"claim": "two metrics of the same runs", "a": "default", "b": "default", "metric": "ood",
                     "metric_b": "clean_val", "direction": "less"}],
    "selection": {"metric": "clean_val", "among": ["baseline", "default"], "rule": "highest", "tolerance": 0.1},
}


def _with(change):
    data = copy.deepcopy(GOOD)
    change(data)
    return data


def test_the_good_study_reads_into_plain_data():
    s = parse_study("experiments/demo.toml", GOOD)
    assert s.name == "demo" and s.seeds == (0, 1, 2) and s.variant_names == ("baseline", "default")
    assert s.variant("default").label == "default"  # label defaults to the name
    assert s.metric("clean_val").file == "metrics.json" and s.metric("clean_val").scale == 100.0
    assert s.evaluations[0].needs == ("baseline",) and s.evaluations[0].path == "ood/eval.json"
    assert s.comparisons[1].margin == 0.5 and s.comparisons[0].sign == 1
    assert s.comparisons[0].metric_b is None and s.comparisons[0].b_metric == "clean_val"  # default: metric
    assert not s.comparisons[0].same_runs
    assert s.comparisons[2].b_metric == "clean_val" and s.comparisons[2].metric == "ood" and s.comparisons[2].same_runs
    assert s.selection.goal == "highest" and s.listed


@pytest.mark.parametrize("path", sorted((REPO / "experiments").glob("*.toml")), ids=lambda p: p.name)
def test_every_declared_study_loads(path):
    study = load_study(path)
    assert study.name == path.stem


CASES = [
    ("unknown top-level table", lambda d: d.update(extra={}), "[(top level)]: unknown key 'extra'"),
    ("unknown study key", lambda d: d["study"].update(seed=[0]), "[study]: unknown key 'seed'"),
    ("name is not the stem", lambda d: d["study"].update(name="other"), "[study] name: is 'other' but the file is demo.toml"),
    ("no seeds", lambda d: d["study"].update(seeds=[]), "[study] seeds: expected a non-empty list"),
    ("duplicated seed", lambda d: d["study"].update(seeds=[0, 1, 0]), "[study] seeds: lists a seed twice"),
    ("negative seed", lambda d: d["study"].update(seeds=[-1]), "[study] seeds: expected a non-empty list of seeds"),
    ("unknown command", lambda d: d["study"].update(command="sample"), "[study] command: is 'sample'; expected one of train, train-denoiser"),
    ("options not strings", lambda d: d["study"].update(options=["--lr", 0.1]), "[study] options: expected a list of strings"),
    ("--seed among the options", lambda d: d["variants"]["default"].update(options=["--seed", "3"]), "[variants.default] options: --seed is set by the runner"),
    ("--out among the options", lambda d: d["study"].update(options=["--out=x"]), "[study] options: --out is set by the runner"),
    ("missing title", lambda d: d["study"].pop("title"), "[study] title: missing; expected a string"),
    ("no variants", lambda d: d.update(variants={}), "[variants]: expected at least one"),
    ("unknown variant key", lambda d: d["variants"]["default"].update(optoins=[]), "[variants.default]: unknown key 'optoins'"),
    ("variant name with a slash", lambda d: d["variants"].update({"a/b": {}}), "'a/b' is not a usable name"),
    ("comparison names an undeclared variant", lambda d: d["comparisons"][0].update(a="w05"), "[comparisons.0] a: names variant 'w05', which the study does not declare"),
    ("comparison of a variant with itself", lambda d: d["comparisons"][0].update(b="default"), "[comparisons.0] b: a and b are both 'default'; a comparison needs two variants, or two metrics of the same runs (metric_b"),
    ("a run compared with itself", lambda d: d["comparisons"][0].update(b="default", metric_b="clean_val"), "[comparisons.0] metric_b: is 'clean_val', the same as metric, and a and b are both 'default'"),
    ("metric_b names an undeclared metric", lambda d: d["comparisons"][2].update(metric_b="noisy"), "[comparisons.2] metric_b: names metric 'noisy', which the study does not declare; declared: clean_val, ood"),
    ("metric_b not a string", lambda d: d["comparisons"][2].update(metric_b=3), "[comparisons.2] metric_b: expected a string, got 3"),
    ("metric_b in another unit", lambda d: (d["metrics"].update(loss={"key": "loss", "percent": False}), d["comparisons"][2].update(metric_b="loss")), "[comparisons.2] metric_b: metric 'loss' has percent = false but metric 'ood' has percent = true"),
    ("unknown metric", lambda d: d["comparisons"][0].update(metric="noisy"), "[comparisons.0] metric: names metric 'noisy', which the study does not declare"),
    ("unknown direction", lambda d: d["comparisons"][0].update(direction="higher"), "[comparisons.0] direction: is 'higher'; expected one of greater, less, keeps"),
    ("keeps without margin", lambda d: d["comparisons"][1].pop("margin"), "[comparisons.1] margin: direction keeps needs a margin > 0"),
    ("keeps with a negative margin", lambda d: d["comparisons"][1].update(margin=-1), "[comparisons.1] margin: direction keeps needs a margin > 0"),
    ("margin on greater", lambda d: d["comparisons"][0].update(margin=1.0), "[comparisons.0] margin: a margin belongs to direction keeps only"),
    ("NaN margin", lambda d: d["comparisons"][1].update(margin=float("nan")), "[comparisons.1] margin: expected a number of points > 0"),
    ("bad sign", lambda d: d["comparisons"][0].update(sign=2), "[comparisons.0] sign: is 2; expected 1 or -1"),
    ("unknown comparison key", lambda d: d["comparisons"][0].update(metrc="x"), "[comparisons.0]: unknown key 'metrc'"),
    ("placeholder naming an unknown variant", lambda d: d["evaluations"][0]["args"].append("{run:w05}"), "[evaluations.0] args: placeholder {run:w05} names variant 'w05'"),
    ("unknown placeholder", lambda d: d["evaluations"][0]["args"].append("{outdir}"), "[evaluations.0] args: placeholder {outdir} in '{outdir}' is unknown"),
    ("evaluation for an undeclared variant", lambda d: d["evaluations"][0].update(variants=["w1"]), "[evaluations.0] variants: names variant 'w1'"),
    ("evaluation without output", lambda d: d["evaluations"][0].pop("output"), "[evaluations.0] output: missing"),
    ("evaluation output outside its folder", lambda d: d["evaluations"][0].update(output="../x.json"), "[evaluations.0] output: is '../x.json'"),
    ("two evaluations with one name", lambda d: d["evaluations"].append(dict(d["evaluations"][0])), "two evaluations share a name"),
    ("metric without key", lambda d: d["metrics"]["clean_val"].pop("key"), "[metrics.clean_val] key: missing"),
    ("metric images not positive", lambda d: d["metrics"]["clean_val"].update(images=0), "[metrics.clean_val] images: expected a number of images"),
    ("metric percent not a bool", lambda d: d["metrics"]["clean_val"].update(percent="yes"), "[metrics.clean_val] percent: expected true or false"),
    ("metric file absolute", lambda d: d["metrics"]["ood"].update(file="/tmp/eval.json"), "[metrics.ood] file: is '/tmp/eval.json'; expected a path relative to the run folder"),
    ("selection on a test metric", lambda d: d["selection"].update(metric="ood"), "[selection] metric: metric 'ood' (key 'ood.uniform.msp.auroc') is not a validation metric"),
    ("selection among one variant", lambda d: d["selection"].update(among=["default"]), "[selection] among: expected at least two variants"),
    ("selection among an undeclared variant", lambda d: d["selection"].update(among=["default", "w1"]), "[selection] among: names variant 'w1'"),
    ("selection without rule", lambda d: d["selection"].pop("rule"), "[selection] rule: missing"),
    ("selection goal", lambda d: d["selection"].update(goal="best"), "[selection] goal: is 'best'; expected one of highest, lowest"),
]


@pytest.mark.parametrize("case, change, match", CASES, ids=[c[0] for c in CASES])
def test_each_mistake_names_the_file_and_key(case, change, match):
    with pytest.raises(ValueError) as info:
        parse_study("experiments/demo.toml", _with(change))
    message = str(info.value)
    assert message.startswith("experiments/demo.toml: "), message
    assert match in message, (case, message)


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="study file .*nope.toml does not exist"):
        load_study(tmp_path / "nope.toml")
    (tmp_path / "demo.json").write_text("{}")
    with pytest.raises(ValueError, match="expected a .toml file"):
        load_study(tmp_path / "demo.json")
    (tmp_path / "demo.toml").write_text("[study\nname = 1")
    with pytest.raises(ValueError, match="demo.toml is not valid TOML"):
        load_study(tmp_path / "demo.toml")


def test_a_toml_file_round_trip(tmp_path):
    (tmp_path / "tiny.toml").write_text('''
[study]
name = "tiny"
title = "t"
question = "q"
seeds = [0]
budget = "b"
[variants.a]
[variants.b]
options = ["--diffaug", "off"]
[[evaluations]]
name = "gpu"
command = "eval"
args = ["{run}"]
output = "eval.json"
optional = true
''')
    study = load_study(tmp_path / "tiny.toml")
    assert study.command == "train" and study.metrics == () and study.comparisons == () and study.selection is None
    assert study.evaluations[0].optional and study.evaluations[0].variants == ("a", "b")
