"""The committed results recompute from the stored runs (issue 38): every study's study.json is what its runs.json
gives under the verdict rule, docs/results.md is the index those study.json files give, and the README's claims
block says what they say, nothing stronger. A hand edit of any of them, or a stale report, fails here."""
import json

import pytest

from conftest import REPO
from diffaug_fast.studies.index import README_BEGIN, README_END, claim_sentences, index_markdown
from diffaug_fast.studies.report import STUDY_FILE, summarize
from diffaug_fast.studies.collect import RUNS_FILE, read_runs
from diffaug_fast.studies.spec import load_study

STUDIES = sorted(p for p in (REPO / "experiments").glob("*.toml") if load_study(p).listed)


def _rounded(value):
    """JSON as stored (floats already rounded by the report): compared after a JSON round trip."""
    return json.loads(json.dumps(value))


BEFORE_SPLIT = REPO / "docs" / "results" / "before_split"  # the same studies' runs before the validation split
REPORTS = [(p, REPO / "docs" / "results") for p in STUDIES] + \
    [(REPO / "experiments" / f"{d.name}.toml", BEFORE_SPLIT) for d in sorted(BEFORE_SPLIT.iterdir()) if d.is_dir()]


@pytest.mark.parametrize("path, results", REPORTS, ids=lambda x: x.stem if x.suffix else x.name)
def test_each_study_json_recomputes_from_its_runs(path, results):
    study = load_study(path)
    folder = results / study.name
    assert (folder / RUNS_FILE).is_file(), f"{study.name}: no stored runs; run `diffaug-fast study run {path.name}`"
    stored = json.loads((folder / STUDY_FILE).read_text())
    assert _rounded(summarize(study, read_runs(folder / RUNS_FILE))) == stored, \
        f"{study.name}: study.json is stale; run `diffaug-fast study report experiments/{path.name}`"


def test_results_index_is_generated_from_the_studies(monkeypatch):
    monkeypatch.chdir(REPO)  # the index names its paths relative to the checkout; nothing is written
    assert (REPO / "docs" / "results.md").read_text() == index_markdown("experiments", "docs/results",
                                                                         "docs/results.md"), \
        "docs/results.md is stale or hand-edited; run `diffaug-fast study index --readme README.md`"


def test_readme_claims_are_the_generated_verdicts(monkeypatch):
    monkeypatch.chdir(REPO)
    text = (REPO / "README.md").read_text()
    block = text.split(README_BEGIN, 1)[1].split(README_END, 1)[0].strip().splitlines()
    assert block == claim_sentences("experiments", "docs/results", "README.md"), \
        "README's claims block is stale or hand-edited; run `diffaug-fast study index --readme README.md`"
