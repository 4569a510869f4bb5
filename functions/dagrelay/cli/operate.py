"""The operator's commands of the ``dagrelay`` console script, registered on ``cli.app``:

    dagrelay validate [FILES...]
    dagrelay pipeline export PIPELINE [-o FILE]
    dagrelay backfill PIPELINE --from DATE --to DATE [--reprocess none|failed|all]
                      [--max-concurrent N] [--wait] [--dry-run]
    dagrelay rerun BATCH TASK [--downstream] [--pipeline P]
    dagrelay cancel BATCH --pipeline P
    dagrelay status [BATCH] [--pipeline P] [--json] [--wait [--timeout S]]
    dagrelay history BATCH TASK [--traceback]
    dagrelay explain BATCH [--pipeline P]

The decisions (plans, rerun targets, explanations) are pure functions in
``dagrelay.ops.verbs``; this module reads, renders, and acts: batches start by publishing
start_batch messages (like ``trigger``), so a backfill works against the deployed system;
rerun and cancel call the engine directly, as the router would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from dagrelay.cli.app import app, fail, pipeline_app, reports_errors
from dagrelay.cli.render import (
    batch_table,
    dead_letter_table,
    duration,
    json_default,
    problem,
    status_text,
    time_text,
)
from dagrelay.cli.trigger import current_user, publish, start_batch_message
from dagrelay.config import get_settings
from dagrelay.engine.core import Engine
from dagrelay.errors import BadMessage, DagrelayError, PipelineError
from dagrelay.handlers.registry import default_registry
from dagrelay.messages import CancelBatch, Rerun
from dagrelay.ops import verbs as ops
from dagrelay.pipelines.export import export_yaml, read_pipeline
from dagrelay.pipelines.spec import PipelineSpec, load_pipeline
from dagrelay.pipelines.validate import problems as pipeline_problems
from dagrelay.pipelines.validate import registered_handlers
from dagrelay.pubsub import PubSubPublisher
from dagrelay.store import transitions as store
from dagrelay.store.db import get_engine
from dagrelay.store.outbox import Publisher
from dagrelay.store.reads import batch_report

DEFAULT_TIMEOUT_S = 3600.0
DEFAULT_POLL_S = 2.0

Timeout = Annotated[
    float, typer.Option(min=0, help="Give up waiting after this many seconds (exit code 1).")
]
Poll = Annotated[float, typer.Option(min=0.01, help="Seconds between looks at the database.")]
PipelineOption = Annotated[str | None, typer.Option(help="The batch's pipeline.")]


def _engine(publisher: Publisher) -> Engine:
    """The engine as the router builds it (``dagrelay.router.wiring``), without the router."""
    settings = get_settings()
    return Engine(
        get_engine(),
        publisher,
        default_registry,
        events_topic=settings.events_topic,
        alerts_topic=settings.alerts_topic,
        worker_id=f"cli:{current_user()}",
    )


# -- validate / export ---------------------------------------------------------------------------


@app.command()
@reports_errors
def validate(
    files: Annotated[
        list[Path] | None,
        typer.Argument(
            exists=True,
            dir_okay=False,
            readable=True,
            help="Pipeline files (default: every pipeline in the database).",
        ),
    ] = None,
) -> None:
    """Check pipelines: cycles, unknown parents and handlers, params that do not fit their
    handler. Exit code 2 if anything is wrong, with every problem printed."""
    handlers = registered_handlers()
    found: list[str] = []
    for source, spec in _specs(files or [], found):
        problems = pipeline_problems(spec, handlers)
        found += problems
        if not problems:
            typer.echo(f"{source}: pipeline {spec.pipeline} is valid ({len(spec.tasks)} tasks)")
    if found:
        raise PipelineError(found)


def _specs(files: Sequence[Path], found: list[str]) -> list[tuple[str, PipelineSpec]]:
    """The pipelines of the files (a file that does not load adds its problems to ``found``),
    or with no files every pipeline in the database."""
    if not files:
        with get_engine().connect() as conn:
            names = ops.pipeline_names(conn)
            if not names:
                raise DagrelayError("no pipelines in the database (and no files given)")
            return [(f"database:{n}", read_pipeline(conn, n)) for n in names]
    specs = []
    for file in files:
        try:
            specs.append((file.name, load_pipeline(file)))
        except PipelineError as exc:
            found += exc.problems
    return specs


@pipeline_app.command("export")
@reports_errors
def pipeline_export(
    pipeline: Annotated[str, typer.Argument(help="The pipeline to export.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """Write a pipeline's rows as a pipeline file: `pipeline apply` of it changes nothing."""
    with get_engine().connect() as conn:
        spec = read_pipeline(conn, pipeline)
    text = export_yaml(spec)
    if output is None:
        typer.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {output} (pipeline {pipeline}, {len(spec.tasks)} tasks)")


# -- backfill ------------------------------------------------------------------------------------


@app.command()
@reports_errors
def backfill(
    pipeline: Annotated[str, typer.Argument(help="The pipeline to run for each day.")],
    *,
    first: Annotated[
        datetime, typer.Option("--from", formats=["%Y-%m-%d"], help="First day (included).")
    ],
    last: Annotated[
        datetime, typer.Option("--to", formats=["%Y-%m-%d"], help="Last day (included).")
    ],
    reprocess: Annotated[
        ops.Reprocess,
        typer.Option(help="Also run again: failed (FAILED, CANCELLED) or all batches."),
    ] = ops.Reprocess.NONE,
    max_concurrent: Annotated[
        int | None,
        typer.Option(min=1, help="At most this many of the backfill's batches RUNNING at once."),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait", help="Wait until every batch finished; exit 1 unless all succeeded."
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan, start nothing.")
    ] = False,
    timeout: Timeout = DEFAULT_TIMEOUT_S,
    poll: Poll = DEFAULT_POLL_S,
) -> None:
    """One batch per day (batch id and params `date`/`ds`: the ISO date), never repeating a
    batch that succeeded unless asked. New batches start by publishing start_batch; existing
    ones are rerun from their failed tasks (or, with --reprocess all, from their roots)."""
    days = ops.backfill_dates(first.date(), last.date())
    with get_engine().connect() as conn:
        if not store.pipeline_tasks(conn, pipeline):
            raise DagrelayError(f"no pipeline {pipeline!r} in the database (it has no tasks)")
        existing = ops.batch_statuses(conn, pipeline, [d.isoformat() for d in days])
    plan = ops.plan_backfill(days, existing, reprocess)
    console = Console()
    console.print(plan_table(pipeline, plan))
    todo = [item for item in plan if item.action != ops.Action.SKIP]
    if dry_run:
        typer.echo(f"dry run: {len(todo)} of {len(plan)} days would run; nothing started")
        return
    runner = _Backfill(pipeline, max_concurrent, wait, time.monotonic() + timeout, poll)
    results = runner.run(todo)
    console.print(result_table(pipeline, results))
    if wait and any(status != "SUCCESS" for status in results.values()):
        raise typer.Exit(1)


def plan_table(pipeline: str, plan: Sequence[ops.PlannedBatch]) -> Table:
    table = Table(title=f"backfill {pipeline}: {len(plan)} days", title_justify="left")
    for column in ("date", "existing", "action", "why"):
        table.add_column(column)
    for item in plan:
        table.add_row(
            item.batch_id,
            status_text(item.existing) if item.existing else Text("-", style="dim"),
            Text(str(item.action), style="dim" if item.action == ops.Action.SKIP else "bold"),
            item.reason,
        )
    return table


def result_table(pipeline: str, results: Mapping[str, str]) -> Table:
    table = Table(title=f"backfill {pipeline}: started", title_justify="left")
    table.add_column("batch")
    table.add_column("status now")
    for batch_id, status in results.items():
        table.add_row(batch_id, status_text(status))
    return table


class _Backfill:
    """Launches the planned batches, at most ``limit`` RUNNING at a time (a batch whose
    start message the router has not processed yet counts as running)."""

    def __init__(
        self, pipeline: str, limit: int | None, wait: bool, deadline: float, poll: float
    ) -> None:
        self.pipeline, self.limit, self.wait = pipeline, limit, wait
        self.deadline, self.poll = deadline, poll
        self.launched: list[str] = []

    def run(self, todo: Sequence[ops.PlannedBatch]) -> dict[str, str]:
        pending = list(todo)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        with Progress(*columns, TimeElapsedColumn(), console=Console(stderr=True)) as progress:
            bar = progress.add_task(f"{self.pipeline}: batches finished", total=len(todo))
            while True:
                statuses = self._statuses()
                running = ops.in_flight(self.launched, statuses)
                progress.update(bar, completed=len(self.launched) - len(running))
                while pending and (self.limit is None or len(running) < self.limit):
                    item = pending.pop(0)
                    if self._launch(item):
                        running.append(item.batch_id)
                if not pending and not (self.wait and running):
                    break
                if time.monotonic() > self.deadline:
                    left = ", ".join(p.batch_id for p in pending) or "none"
                    raise DagrelayError(
                        f"backfill timed out: {len(running)} batches still running; "
                        f"not started: {left}"
                    )
                time.sleep(self.poll)
            progress.update(bar, completed=len(self.launched) - len(running))
        statuses = self._statuses()
        return {b: statuses.get(b, "PUBLISHED") for b in self.launched}

    def _statuses(self) -> dict[str, str]:
        with get_engine().connect() as conn:
            return ops.batch_statuses(conn, self.pipeline, self.launched)

    def _launch(self, item: ops.PlannedBatch) -> bool:
        if item.action == ops.Action.START:
            settings = get_settings()
            params = ops.batch_params(item.day)
            message = start_batch_message(self.pipeline, item.batch_id, params, None)
            publish(settings.project_id, settings.events_topic, message)
        elif not rerun_batch(self.pipeline, item.batch_id, item.action == ops.Action.RERUN_ALL):
            return False
        self.launched.append(item.batch_id)
        return True


def rerun_batch(pipeline: str, batch_id: str, everything: bool) -> bool:
    """Run an existing batch again through ``Engine.rerun`` (each target with its
    downstream; see ``ops.rerun_targets``). False if there was nothing to rerun."""
    with get_engine().connect() as conn:
        rows = ops.batch_rows(conn, pipeline, batch_id)
        parents = ops.pipeline_parents(conn, pipeline)
    targets = ops.rerun_targets(rows, parents, everything=everything)
    if not targets:
        typer.echo(f"{pipeline}/{batch_id}: nothing to rerun", err=True)
        return False
    # One transaction for all of them: no task starts before every reset is committed.
    engine = _engine(PubSubPublisher(get_settings().project_id))
    engine.rerun_tasks(batch_id, targets, downstream=True, pipeline=pipeline)
    return True


# -- rerun / cancel ------------------------------------------------------------------------------


@app.command()
@reports_errors
def rerun(
    batch_id: Annotated[str, typer.Argument(help="The batch.")],
    task: Annotated[str, typer.Argument(help="The task to run again.")],
    downstream: Annotated[
        bool, typer.Option("--downstream", help="Also reset every task below it.")
    ] = False,
    pipeline: PipelineOption = None,
) -> None:
    """Reset a task (and with --downstream its descendants) in a batch and run it again; the
    batch resumes. Their earlier attempts stay in `dagrelay history`."""
    with get_engine().connect() as conn:
        owner = ops.task_pipeline(conn, task)
        if pipeline is not None and owner is not None and owner != pipeline:
            raise BadMessage(f"task {task!r} belongs to pipeline {owner!r}, not {pipeline!r}")
        preview = ops.rerun_preview(conn, batch_id, task, downstream)
    settings = get_settings()
    reset = _engine(PubSubPublisher(settings.project_id)).rerun(
        Rerun(batch_id=batch_id, task=task, pipeline=pipeline or owner, downstream=downstream)
    )
    table = Table(title=f"{owner} / {batch_id}: reset", title_justify="left")
    for column in ("task", "was", "attempts"):
        table.add_column(column)
    for row in preview:
        table.add_row(row["name"], status_text(row["status"]), str(row["attempt"]))
    Console().print(table)
    typer.echo(f"{reset} task rows reset; batch {owner}/{batch_id} is RUNNING again")


@app.command()
@reports_errors
def cancel(
    batch_id: Annotated[str, typer.Argument(help="The batch.")],
    pipeline: Annotated[str, typer.Option(help="The batch's pipeline.")],
) -> None:
    """Cancel a RUNNING batch: its waiting tasks become CANCELLED, running ones finish."""
    with get_engine().connect() as conn:
        before = batch_report(conn, batch_id, pipeline)
    if not before:
        fail([f"no batch {batch_id!r} in pipeline {pipeline!r}"], 1)
    cancelled = _engine(PubSubPublisher(get_settings().project_id)).cancel_batch(
        CancelBatch(pipeline=pipeline, batch_id=batch_id)
    )
    if cancelled:
        typer.echo(f"cancelled batch {pipeline}/{batch_id}")
    else:
        typer.echo(f"batch {pipeline}/{batch_id} is {before[0]['status']}: nothing to cancel")
    with get_engine().connect() as conn:
        Console().print(batch_table(batch_report(conn, batch_id, pipeline)[0]))


# -- status --------------------------------------------------------------------------------------


@app.command()
@reports_errors
def status(
    batch_id: Annotated[
        str | None, typer.Argument(help="The batch to show (default: the recent batches).")
    ] = None,
    *,
    pipeline: Annotated[str | None, typer.Option(help="Only this pipeline's batches.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Follow the batch until it is no longer RUNNING; exit 0 if it succeeded, else 1.",
        ),
    ] = False,
    timeout: Timeout = DEFAULT_TIMEOUT_S,
    poll: Poll = DEFAULT_POLL_S,
    limit: Annotated[int, typer.Option(min=1, help="How many recent batches to list.")] = 20,
) -> None:
    """Show a batch's tasks, or the recent batches. Exit code 1 if there is no such batch."""
    if batch_id is None:
        if wait:
            raise typer.BadParameter("--wait needs a BATCH", param_hint="--wait")
        _recent(pipeline, limit, as_json)
        return
    if wait:
        _wait(batch_id, pipeline, time.monotonic() + timeout, poll)
        return
    with get_engine().connect() as conn:
        report = batch_report(conn, batch_id, pipeline)
    if not report:
        where = f" in pipeline {pipeline!r}" if pipeline else ""
        fail([f"no batch {batch_id!r}{where}"], 1)
    if as_json:
        typer.echo(json.dumps({"batches": report}, default=json_default, indent=2))
        return
    console = Console()
    for batch in report:
        console.print(batch_table(batch))
        if batch["dead_letters"]:
            console.print(dead_letter_table(batch["dead_letters"]))


def _recent(pipeline: str | None, limit: int, as_json: bool) -> None:
    with get_engine().connect() as conn:
        batches = ops.recent_batches(conn, pipeline, limit)
    if as_json:
        typer.echo(json.dumps({"batches": batches}, default=json_default, indent=2))
        return
    table = Table(title="recent batches", title_justify="left")
    for column in ("pipeline", "batch", "status", "started", "duration", "tasks"):
        table.add_column(column, justify="right" if column in ("duration", "tasks") else "left")
    for b in batches:
        end = b["finished_at"]
        seconds = (end - b["created_at"]).total_seconds() if end is not None else None
        table.add_row(
            b["pipeline"],
            b["batch_id"],
            status_text(b["status"]),
            time_text(b["created_at"], "%Y-%m-%d %H:%M:%S"),
            duration(seconds),
            f"{b['tasks_done']}/{b['tasks_total']}",
        )
    Console().print(table)


def _wait(batch_id: str, pipeline: str | None, deadline: float, poll: float) -> None:
    """Follow the batch (it may not exist yet: its start message may be on its way) until
    it leaves RUNNING or the deadline passes."""
    console = Console()
    report: list[dict[str, Any]] = []
    with Live(Text(f"waiting for batch {batch_id}..."), console=console) as live:
        while True:
            with get_engine().connect() as conn:
                report = batch_report(conn, batch_id, pipeline)
            if report:
                live.update(Group(*(batch_table(b) for b in report)), refresh=True)
            if report and all(b["status"] != "RUNNING" for b in report):
                break
            if time.monotonic() > deadline:
                now = report[0]["status"] if report else "not started"
                fail([f"batch {batch_id!r} is still {now} after the timeout"], 1)
            time.sleep(poll)
    console.print()
    outcomes = ", ".join(f"{b['pipeline']}/{b['batch_id']} {b['status']}" for b in report)
    typer.echo(f"finished: {outcomes}")
    if any(b["status"] != "SUCCESS" for b in report):
        raise typer.Exit(1)


# -- history / explain ---------------------------------------------------------------------------


@app.command()
@reports_errors
def history(
    batch_id: Annotated[str, typer.Argument(help="The batch.")],
    task: Annotated[str, typer.Argument(help="The task.")],
    show_traceback: Annotated[
        bool, typer.Option("--traceback", help="Print each failed attempt's traceback.")
    ] = False,
) -> None:
    """Every attempt of a task in a batch, across reruns: when, where, how it ended."""
    with get_engine().connect() as conn:
        attempts = ops.task_history(conn, batch_id, task)
        row = ops.task_row(conn, batch_id, task)
    if not attempts:
        if row is None:
            fail([f"task {task!r} has no row and no attempts in batch {batch_id!r}"], 1)
        typer.echo(f"{task} in {batch_id}: {row['status']}, no attempts ({problem(row)})")
        return
    Console().print(history_table(batch_id, task, attempts, row))
    if show_traceback:
        for entry in attempts:
            if entry.traceback:
                typer.echo(f"\n-- run {entry.run}, attempt {entry.attempt} --\n{entry.traceback}")


def history_table(
    batch_id: str,
    task: str,
    attempts: Sequence[ops.AttemptEntry],
    row: Mapping[str, Any] | None,
) -> Table:
    now = f"now {row['status']}" if row is not None else "no current row"
    table = Table(title=f"{task} in batch {batch_id} ({now})", title_justify="left")
    for column in ("run", "attempt", "started", "duration", "outcome", "worker", "error"):
        table.add_column(column, overflow="fold")
    for entry in attempts:
        seconds = None
        if entry.finished_at is not None:
            seconds = (entry.finished_at - entry.started_at).total_seconds()
        outcome = status_text(entry.outcome or "running")
        if not entry.current:
            outcome.append(" (rerun)", style="dim")
        table.add_row(
            str(entry.run),
            str(entry.attempt),
            time_text(entry.started_at, "%Y-%m-%d %H:%M:%S"),
            duration(seconds),
            outcome,
            entry.worker or "",
            (entry.error or "").splitlines()[0][:200] if entry.error else "",
        )
    return table


@app.command()
@reports_errors
def explain(
    batch_id: Annotated[str, typer.Argument(help="The batch.")],
    pipeline: Annotated[str | None, typer.Option(help="Only this pipeline's batch.")] = None,
) -> None:
    """Why a batch failed: each failed task with its error, and under it the tasks its
    failure took down (UPSTREAM_FAILED)."""
    with get_engine().connect() as conn:
        report = batch_report(conn, batch_id, pipeline)
        causes = ops.batch_failures(conn, batch_id, pipeline)
    if not report:
        where = f" in pipeline {pipeline!r}" if pipeline else ""
        fail([f"no batch {batch_id!r}{where}"], 1)
    console = Console()
    for batch in report:
        mine = [c for c in causes if c.pipeline == batch["pipeline"]]
        console.print(explain_tree(batch["pipeline"], batch_id, batch["status"], mine))


def explain_tree(
    pipeline: str, batch_id: str, status: str, causes: Sequence[ops.RootCause]
) -> Tree:
    tree = Tree(Text.assemble(f"{pipeline} / {batch_id}  ", status_text(status)))
    if not causes:
        tree.add(Text("nothing failed", style="green"))
    for cause in causes:
        if cause.task is None:
            node = tree.add(Text("root cause no longer in the batch (rerun?)", style="dim"))
        else:
            error = (cause.error or "").splitlines()[0] if cause.error else "no error text"
            attempts = f"{cause.attempts} attempt{'s' if cause.attempts != 1 else ''}"
            label = Text.assemble(
                (cause.task, "bold"), " ", status_text("ERROR"), f" after {attempts}: {error}"
            )
            node = tree.add(label)
        for casualty in cause.casualties:
            node.add(Text.assemble(f"{casualty} ", status_text("UPSTREAM_FAILED")))
    return tree
