"""``diffaug-fast study run``: make every run and evaluation of a study that is not finished yet, then collect.

Why subprocesses of the ordinary command line: a study's run is exactly the run a user would make by hand (same
flags, same folder format, same resume), its log is the command's own output, and one failing run cannot take the
others down. A run folder is finished when the command's last file is there; a run with a checkpoint continues
with ``--resume``; a folder made with other options is refused before anything starts (``studies/checks.py``).
"""
from __future__ import annotations

import datetime
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from diffaug_fast.errors import DiffAugError
from diffaug_fast.runs import files
from diffaug_fast.runs.checkpoint import checkpoint_exists
from diffaug_fast.studies import checks
from diffaug_fast.studies.collect import MARKERS, collect, commit, finished, machine, run_folder
from diffaug_fast.studies.spec import Evaluation, Study

_PLACEHOLDER = re.compile(r"\{(run|out|seed|run:[^{}]+)\}")


@dataclass
class Task:
    """One subprocess to run: a run (training) or an evaluation of one, with the tasks it waits for."""
    key: tuple
    what: str
    argv: list[str]
    log: Path
    done: Path  # the file that says it finished
    folder: Path  # the run folder it belongs to
    needs: list[tuple] = field(default_factory=list)


@dataclass
class Outcome:
    planned: int
    succeeded: list[str]
    failed: list[str]  # one line per failure: what, exit status, last log line, the log
    skipped: list[str]  # waited for a task that failed
    runs_json: Path | None


def _fill(arg: str, study: Study, runs_root: Path, evaluation: Evaluation, variant: str, seed: int) -> str:
    folder = run_folder(runs_root, study, variant, seed)

    def one(m: re.Match) -> str:
        name = m.group(1)
        if name == "run":
            return str(folder)
        if name == "out":
            return str(folder / evaluation.name)
        if name == "seed":
            return str(seed)
        return str(run_folder(runs_root, study, name[4:], seed))

    return _PLACEHOLDER.sub(one, arg)


def _run_argv(study: Study, variant: str, seed: int, folder: Path, extra: list[str]) -> list[str]:
    resume = ["--resume"] if checkpoint_exists(folder / files.CHECKPOINT) else []
    return [study.command, "--seed", str(seed), "--out", str(folder), *resume, *study.options,
            *study.variant(variant).options, *extra]


def chosen_evaluations(study: Study, optional: list[str] = ()) -> tuple[Evaluation, ...]:
    """The evaluations to run: every one not declared optional, and the optional ones named (or "all")."""
    names = [e.name for e in study.evaluations if e.optional]
    unknown = [n for n in optional if n != "all" and n not in names]
    if unknown:
        raise DiffAugError(f"argument --optional: {', '.join(unknown)} is not an optional evaluation of "
                           f"{study.path}; expected all or some of {', '.join(names) or '(none declared)'}")
    return tuple(e for e in study.evaluations if not e.optional or "all" in optional or e.name in optional)


def plan(study: Study, runs_root: str | Path = "runs/studies", extra: list[str] = (),
         optional: list[str] = ()) -> list[Task]:
    """The runs and evaluations still to do, seed by seed (so that paired comparisons fill in early), each
    evaluation right after its run."""
    runs_root, extra = Path(runs_root), list(extra)
    evaluations = chosen_evaluations(study, optional)
    tasks: dict[tuple, Task] = {}
    for seed in study.seeds:
        for variant in study.variant_names:
            folder = run_folder(runs_root, study, variant, seed)
            key = ("run", variant, seed)
            if not finished(study, folder):
                argv = _run_argv(study, variant, seed, folder, extra)
                how = "resuming" if "--resume" in argv else "training"
                tasks[key] = Task(key, f"{variant} seed {seed}: {how}", argv, folder.parent / f"seed{seed}.log",
                                  folder / MARKERS[study.command], folder)
            for i, ev in enumerate(evaluations):
                if variant not in ev.variants or (folder / ev.path).is_file():
                    continue
                needs = [key] + [("run", other, seed) for other in ev.needs] + [
                    ("eval", e.name, other, seed) for other in ev.needs for e in evaluations[:i + 1]
                    if other in e.variants and other != variant]
                argv = [ev.command, *(_fill(a, study, runs_root, ev, variant, seed) for a in ev.args)]
                tasks[("eval", ev.name, variant, seed)] = Task(
                    ("eval", ev.name, variant, seed), f"{variant} seed {seed}: evaluation {ev.name}", argv,
                    folder.parent / f"seed{seed}.{ev.name}.log", folder / ev.path, folder, needs)
    for task in tasks.values():  # what is already finished is not waited for
        task.needs = [n for n in task.needs if n in tasks]
    return list(tasks.values())


def check(study: Study, runs_root: str | Path = "runs/studies", extra: list[str] = ()) -> None:
    """Every variant's options parse, and every existing run folder agrees with them; one error naming them."""
    bad_options, bad_runs = [], []
    for variant in study.variants:
        try:
            checks.declared(study.command, [*study.options, *variant.options, *extra])
        except (ValueError, FileNotFoundError) as err:
            bad_options.append(f"variant {variant.name}'s options: {err}")
            continue
        for seed in study.seeds:
            folder = run_folder(runs_root, study, variant.name, seed)
            if (folder / files.CONFIG).is_file():
                declared = [*study.options, *variant.options, "--seed", str(seed)]
                if found := checks.mismatches(study.command, folder, declared, list(extra)):
                    bad_runs.append(f"run {variant.name} seed {seed} ({folder}): {', '.join(found)}")
    if bad_options:
        raise DiffAugError(f"{study.path}: " + "; ".join(bad_options))
    if bad_runs:
        more = f"; and {len(bad_runs) - 3} more" if len(bad_runs) > 3 else ""
        raise DiffAugError(f"{study.path}: {len(bad_runs)} existing run folder(s) were made with other options than "
                           f"the study declares: " + "; ".join(bad_runs[:3]) + more
                           + " (move them away, or change the study back)")


def _last_line(log: Path) -> str:
    try:
        text = log.read_text(errors="replace")[-4000:]
    except OSError:
        return ""
    lines = [ln.strip() for ln in re.split(r"[\r\n]", text) if ln.strip()]
    return lines[-1][:200] if lines else ""


def _env(jobs: int) -> dict:
    env = dict(os.environ)
    if jobs > 1 and "OMP_NUM_THREADS" not in env:  # N runs share the cores instead of each taking all of them
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    return env


def _start(task: Task, env: dict) -> tuple[subprocess.Popen, object, float]:
    task.log.parent.mkdir(parents=True, exist_ok=True)
    log = open(task.log, "a")
    log.write(f"\n$ diffaug-fast {shlex.join(task.argv)}  # {datetime.datetime.now().isoformat(timespec='seconds')}\n")
    log.flush()
    # a session of its own: a terminal's Ctrl-C reaches the study alone, which passes it on once (_stop_all)
    proc = subprocess.Popen([sys.executable, "-m", "diffaug_fast.cli", *task.argv], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    return proc, log, time.monotonic()


def _stop_all(running: dict, signum: int) -> None:
    """A stopped study passes its signal on to its runs (each stops as a stopped run does: checkpoint kept) and
    waits for them."""
    for proc, log, _ in running.values():
        if proc.poll() is None:
            proc.send_signal(signum)
    for proc, log, _ in running.values():
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def execute(tasks: list[Task], *, jobs: int = 1, say=print) -> tuple[list[str], list[str], list[str]]:
    """Run ``tasks`` (up to ``jobs`` at once, each after the tasks it needs); returns (succeeded, failed, skipped)
    lines. A failure does not stop the others; what needed it is skipped."""
    if jobs < 1:
        raise ValueError(f"argument --jobs must be > 0, got {jobs}")
    pending, running, state = list(tasks), {}, {}
    ok, failed, skipped, started = [], [], [], 0
    env, made_by = _env(jobs), {"machine": machine(), "commit": commit()}
    try:
        while pending or running:
            for task in list(pending):
                if any(state.get(n) is False for n in task.needs):
                    pending.remove(task)
                    state[task.key] = False
                    skipped.append(f"{task.what}: not run (a run it needs failed)")
                elif len(running) < jobs and all(state.get(n) for n in task.needs):
                    pending.remove(task)
                    started += 1
                    say(f"[{started}/{len(tasks)}] {task.what} (log: {task.log})", flush=True)
                    running[task.key] = (task, *_start(task, env))
            for key, (task, proc, log, t0) in list(running.items()):
                if proc.poll() is None:
                    continue
                log.close()
                del running[key]
                seconds = time.monotonic() - t0
                state[key] = proc.returncode == 0 and task.done.is_file()
                if state[key]:
                    ok.append(task.what)
                    if key[0] == "run":
                        files.write_json(task.folder / files.STUDY_RUN, {**made_by, "command": task.argv})
                    say(f"      {task.what}: finished in {seconds:.0f} s", flush=True)
                else:
                    why = f"exit {proc.returncode}" if proc.returncode else f"exit 0 but no {task.done.name}"
                    failed.append(f"{task.what} FAILED ({why}): {_last_line(task.log)} (log: {task.log})")
                    say(f"      {task.what}: FAILED ({why}) after {seconds:.0f} s", flush=True)
            if running:
                time.sleep(0.2)
    except BaseException as exc:
        _stop_all({k: v[1:] for k, v in running.items()}, getattr(exc, "signum", signal.SIGINT))
        raise
    return ok, failed, skipped


def run_study(study: Study, *, jobs: int = 1, extra: list[str] = (), runs_root: str | Path = "runs/studies",
              results_root: str | Path | None = "docs/results", optional: list[str] = (), say=print) -> Outcome:
    """Check, run what is missing (with the ``optional`` evaluations named), collect the numbers into
    ``<results_root>/<name>/runs.json`` (None: don't)."""
    check(study, runs_root, extra)
    tasks = plan(study, runs_root, extra, optional)
    runs = sum(t.key[0] == "run" for t in tasks)
    total = len(study.variants) * len(study.seeds)
    if tasks:
        say(f"study {study.name}: {runs} of {total} runs and {len(tasks) - runs} evaluations to do, up to {jobs} at "
            "once", flush=True)
    else:
        say(f"study {study.name}: all {total} runs and their evaluations are finished; nothing to run", flush=True)
    ok, failed, skipped = execute(tasks, jobs=jobs, say=say)
    path = collect(study, runs_root, results_root) if results_root is not None else None
    return Outcome(len(tasks), ok, failed, skipped, path)
