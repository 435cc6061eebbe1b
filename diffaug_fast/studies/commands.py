"""``diffaug-fast study run|report|index``: the declared-study commands, wired into the command line by cli.py
(kept here so that cli.py stays commands-only and small; the options come from config/commands.py like every
other command's)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from diffaug_fast.config.commands import StudyIndexOptions, StudyReportOptions, StudyRunOptions
from diffaug_fast.config.options import add_arguments
from diffaug_fast.errors import stop_status

PROG = "diffaug-fast"
HELP = ("declared studies (experiments/<name>.toml: variants x seeds, metrics, claims, a selection rule on "
        "validation): run them, report their verdicts, index them; guide: docs/guides/studies.md")


def cmd_run(args) -> None:
    """Every unfinished run and evaluation of a declared study, then its numbers collected into runs.json."""
    from diffaug_fast.studies.runner import run_study
    from diffaug_fast.studies.spec import load_study

    o: StudyRunOptions = args.options[0]
    study = load_study(args.file)
    try:
        outcome = run_study(study, jobs=o.jobs, extra=args.passthrough, runs_root=o.runs, results_root=o.results,
                            optional=o.optional)
    except KeyboardInterrupt as exc:
        how, status = stop_status(exc)
        print(f"{how}: finished runs and checkpoints kept in {Path(o.runs) / study.name}; run the same command again "
              "to continue", file=sys.stderr)
        raise SystemExit(status) from None
    if outcome.runs_json is not None:
        where = "".join(f" --{k} {v}" for k, v, default in (("runs", o.runs, "runs/studies"),
                                                            ("results", o.results, "docs/results")) if v != default)
        print(f"numbers: {outcome.runs_json}; the report: {PROG} study report {args.file}{where}")
    for line in outcome.failed + outcome.skipped:
        print(f"{PROG}: {line}", file=sys.stderr)
    if outcome.failed:
        print(f"{PROG}: {len(outcome.failed)} of {outcome.planned} failed; the others finished. Fix the cause and run "
              "the same command again: finished runs are kept", file=sys.stderr)
        raise SystemExit(1)


def cmd_report(args) -> None:
    """A study's report from its runs.json (after collecting the finished run folders present here)."""
    from diffaug_fast.studies.collect import collect
    from diffaug_fast.studies.report import write_report
    from diffaug_fast.studies.spec import load_study

    o: StudyReportOptions = args.options[0]
    study = load_study(args.file)
    collect(study, o.runs, o.results)
    readme = write_report(study, Path(o.results) / study.name)
    print(f"report: {readme} (+ study.json and pictures beside it)")


def cmd_index(args) -> None:
    """The generated index of every study's claims."""
    from diffaug_fast.studies.index import update_readme, write_index

    o: StudyIndexOptions = args.options[0]
    print(f"index: {write_index(o.experiments, o.results, o.out)}")
    if o.readme is not None:
        print(f"claims: {update_readme(o.readme, o.experiments, o.results)}")


ACTIONS = {
    "run": ("make every run and evaluation of the study not finished yet (a run with a checkpoint resumes), then "
            "collect the numbers into RESULTS/<study>/runs.json", cmd_run, StudyRunOptions),
    "report": ("collect the finished run folders present here, then write the report (README.md, study.json, "
               "pictures) from runs.json alone", cmd_report, StudyReportOptions),
    "index": ("write the generated index of every study's claims (docs/results.md)", cmd_index, StudyIndexOptions),
}


def add_parser(sub, parser_class) -> None:
    """`diffaug-fast study run|report|index` under the command line's sub-commands ``sub``."""
    study = sub.add_parser("study", help=HELP.split(";")[0], description=HELP)
    study.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
    actions = study.add_subparsers(dest="action", required=True, parser_class=parser_class,
                                   metavar="{run,report,index}")
    for name, (help_text, func, cls) in ACTIONS.items():
        p = actions.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
        if name != "index":
            p.add_argument("file", metavar="FILE", help="the study file, experiments/<name>.toml")
        if name == "run":
            p.add_argument("passthrough", nargs="*", metavar="-- OPTION",
                           help="after --: options added to every run's command as given (e.g. -- --device cuda); "
                                "existing runs are not refused for them")
        add_arguments(p, cls)
        p.set_defaults(func=func, classes=(cls,))


def split_passthrough(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """`study run FILE -- OPTION ...`: what follows the first -- goes to every run as is (split before parsing:
    argparse loses a -- met inside nested sub-commands)."""
    command = next((a for a in argv if not a.startswith("-")), None)
    if command == "study" and "--" in argv:
        return argv[:argv.index("--")], argv[argv.index("--") + 1:]
    return argv, None


def take_passthrough(parser: argparse.ArgumentParser, args: argparse.Namespace, passthrough: list[str] | None) -> None:
    """Put the options after -- on ``args``; words after FILE without a -- before them are a usage error."""
    if getattr(args, "passthrough", None):
        parser.error(f"unexpected {' '.join(args.passthrough)}: options for every run go after -- "
                     "(study run FILE -- OPTION ...)")
    if passthrough is not None and getattr(args, "action", None) != "run":
        parser.error("only `study run` takes options after --")
    if passthrough is not None:
        args.passthrough = passthrough
