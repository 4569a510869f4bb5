"""The ``dagrelay`` command's answer time: median wall time of fresh processes, against the
same figure for ``python -c pass`` measured in the same run.

Measured: ``dagrelay --help`` and ``dagrelay <verb> --help`` for every verb; the read verbs
(``status BATCH``, ``explain``, ``history``, ``rejected``, ``schedule list``) against a
throwaway database (migrated, one pipeline with a schedule, one finished batch, one rejected
message); ``trigger`` (check in the database, then publish) against a Pub/Sub emulator started
for the run and stopped by its PID. Every round runs each command once, in the same order, so a
busy machine slows them all alike; one warm-up round is not counted. Targets (delta over bare
Python): --help 0.25 s, read verbs 0.6 s, trigger 1.0 s.

Runnable alone: ``python -m local_emulator.bench.cli [--runs N]``; also step 9 of
``python -m local_emulator bench`` (``make bench``)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from dagrelay.local import infra, processes
from dagrelay.messages import Envelope, StartBatch
from dagrelay.pipelines.apply import apply as apply_pipeline
from dagrelay.pipelines.spec import load_pipeline
from dagrelay.store import transitions
from dagrelay.store.outbox import InMemoryPublisher
from dagrelay.store.records import Rejection
from local_emulator.bench.db import throwaway_database
from local_emulator.bench.engine import BenchError, dag_engine, db_engine, run_ok

PROJECT = "dagrelay-clibench"
TOPIC = "clibench-events"
PIPELINE = "clibench"
BATCH = "2024-03"
HELP_TARGET_S = 0.25
READ_TARGET_S = 0.6
TRIGGER_TARGET_S = 1.0
COMMAND_TIMEOUT_S = 120.0
PIPELINE_YAML = f"""\
pipeline: {PIPELINE}
schedule:
  cron: "0 6 * * *"
  timezone: Europe/Brussels
  batch_id_template: "{{interval_start:%Y-%m-%d}}"
  paused: true
tasks:
  - name: extract
    handler: python.noop
  - name: load
    handler: python.noop
    parents: [extract]
  - name: report
    handler: python.noop
    parents: [load]
"""
TASKS = ("extract", "load", "report")


@dataclass(frozen=True)
class Case:
    """One command line; ``argv(n)`` for the n-th run (trigger needs a new batch id each)."""

    name: str
    argv: Callable[[int], list[str]]
    target_s: float | None  # None: the baseline


def dagrelay_script() -> str:
    """The console script next to this interpreter (the one a user types), else on PATH."""
    beside = Path(sys.executable).with_name("dagrelay")
    found = str(beside) if beside.exists() else shutil.which("dagrelay")
    if found is None:
        raise BenchError("no `dagrelay` console script: pip install -e . first")
    return found


def verbs() -> list[list[str]]:
    """Every command of ``dagrelay`` as its words (``["pipeline", "apply"]``), groups' leaves."""
    from dagrelay.cli import app  # noqa: PLC0415 - the bench imports it only to list the verbs

    def leaves(command: Any, words: list[str]) -> Iterator[list[str]]:
        subcommands = getattr(command, "commands", None)  # a group (typer vendors click)
        if not subcommands:
            yield words
            return
        for name, sub in subcommands.items():
            yield from leaves(sub, [*words, name])

    return list(leaves(typer.main.get_command(app), []))


def cases(script: str) -> list[Case]:
    def fixed(*words: str) -> Callable[[int], list[str]]:
        return lambda _: [script, *words]

    found = [
        Case("python -c pass", lambda _: [sys.executable, "-c", "pass"], None),
        Case("dagrelay --help", fixed("--help"), HELP_TARGET_S),
    ]
    found += [
        Case(f"dagrelay {' '.join(w)} --help", fixed(*w, "--help"), HELP_TARGET_S) for w in verbs()
    ]
    reads = [
        ["status", BATCH],
        ["status"],
        ["explain", BATCH],
        ["history", BATCH, "load"],
        ["rejected"],
        ["schedule", "list"],
    ]
    found += [Case(f"dagrelay {' '.join(w)}", fixed(*w), READ_TARGET_S) for w in reads]
    found.append(
        Case(
            f"dagrelay trigger {PIPELINE} BATCH",
            lambda n: [script, "trigger", PIPELINE, f"t{n:04d}"],
            TRIGGER_TARGET_S,
        )
    )
    return found


def seed(url: str, workdir: Path) -> None:
    """The pipeline (with its schedule), one finished batch, one rejected message."""
    db = db_engine(url)
    try:
        path = workdir / "clibench.yaml"
        path.write_text(PIPELINE_YAML)
        with db.begin() as conn:
            apply_pipeline(conn, load_pipeline(path))
            rejection = Rejection.of(
                Envelope(base64.b64encode(b'{"action": "bogus"}').decode(), {}, "clibench-1"),
                "bench: an unknown action",
            )
            transitions.record_rejected_message(conn, rejection, now=datetime.now(UTC))
        engine = dag_engine(db, InMemoryPublisher(), "clibench")
        engine.start_batch(StartBatch(PIPELINE, BATCH, triggered_by="bench"))
        for task in TASKS:
            run_ok(engine, PIPELINE, task, BATCH)
    finally:
        db.dispose()


@contextmanager
def pubsub_topic(workdir: Path) -> Iterator[str]:
    """A Pub/Sub emulator with the bench's topic; its host:port. Stopped by its PID."""
    port = processes.free_port()
    emulator = processes.start_pubsub_emulator(port, PROJECT, workdir)
    host = f"127.0.0.1:{port}"
    saved = os.environ.get("PUBSUB_EMULATOR_HOST")
    try:
        os.environ["PUBSUB_EMULATOR_HOST"] = host
        from google.cloud import pubsub_v1  # noqa: PLC0415 - only the bench needs it

        infra.ensure_topic(pubsub_v1.PublisherClient(), PROJECT, TOPIC)
        yield host
    finally:
        if saved is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = saved
        emulator.stop()


def timed(argv: list[str], env: Mapping[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        argv, env=dict(env), cwd=cwd, capture_output=True, timeout=COMMAND_TIMEOUT_S, check=False
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        said = (done.stderr or done.stdout).decode(errors="replace")[-2000:]
        raise BenchError(f"{' '.join(argv[1:])} exited {done.returncode}:\n{said}")
    return elapsed


def time_rounds(
    found: list[Case], env: Mapping[str, str], cwd: Path, runs: int
) -> dict[str, list[float]]:
    """Each case once per round, ``runs`` rounds after one warm-up round."""
    samples: dict[str, list[float]] = {case.name: [] for case in found}
    for n in range(runs + 1):
        for case in found:
            seconds = timed(case.argv(n), env, cwd)
            if n:
                samples[case.name].append(seconds)
    return samples


def measure(runs: int = 5) -> dict[str, Any]:
    """``{"runs", "baseline_s", "commands": {name: {median_s, delta_s, target_s, pass}}}``."""
    with (
        tempfile.TemporaryDirectory(prefix="dagrelay-clibench-") as tmp,
        throwaway_database("cli") as url,
    ):
        workdir = Path(tmp)
        seed(url, workdir)
        with pubsub_topic(workdir) as host:
            env = os.environ | {
                "DATABASE_URL": url,
                "PUBSUB_EMULATOR_HOST": host,
                "DAGRELAY_PROJECT_ID": PROJECT,
                "DAGRELAY_EVENTS_TOPIC": TOPIC,
                "COLUMNS": "120",
            }
            env.pop("DAGRELAY_CONFIG", None)
            found = cases(dagrelay_script())
            samples = time_rounds(found, env, workdir, runs)
    return summarise(found, samples, runs)


def summarise(found: list[Case], samples: dict[str, list[float]], runs: int) -> dict[str, Any]:
    baseline = statistics.median(samples[found[0].name])
    commands: dict[str, dict[str, Any]] = {}
    for case in found[1:]:
        median = statistics.median(samples[case.name])
        delta = median - baseline
        commands[case.name] = {
            "median_s": round(median, 3),
            "delta_s": round(delta, 3),
            "target_s": case.target_s,
            "pass": case.target_s is not None and delta <= case.target_s,
        }
    return {"runs": runs, "baseline_s": round(baseline, 3), "commands": commands}


def table(result: Mapping[str, Any]) -> Table:
    t = Table(
        title=f"dagrelay CLI: median of {result['runs']} fresh processes", title_justify="left"
    )
    for column in ("command", "median", "baseline", "delta", "target", ""):
        t.add_column(column, justify="left" if column == "command" else "right", no_wrap=True)
    baseline = f"{result['baseline_s']:.3f} s"
    for name, c in result["commands"].items():
        verdict = "[green]PASS" if c["pass"] else "[red]MISS"
        t.add_row(
            name,
            f"{c['median_s']:.3f} s",
            baseline,
            f"{c['delta_s']:+.3f} s",
            f"<= +{c['target_s']:.2f} s",
            verdict,
        )
    return t


def main(
    runs: Annotated[int, typer.Option(min=1, help="Counted runs of each command.")] = 5,
    out: Annotated[Path | None, typer.Option(help="Also write the figures as JSON.")] = None,
) -> None:
    """Print each command's median, the baseline, the delta and the verdict."""
    result = measure(runs)
    Console(width=110).print(table(result))
    if out is not None:
        out.write_text(json.dumps(result, indent=2) + "\n")
    missed = [name for name, c in result["commands"].items() if not c["pass"]]
    raise typer.Exit(1 if missed else 0)


if __name__ == "__main__":
    typer.run(main)
