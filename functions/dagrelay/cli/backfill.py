"""``dagrelay backfill PIPELINE --from DATE --to DATE [--reprocess none|failed|all] [--latest]
[--max-concurrent N] [--wait] [--dry-run]``: one batch per day. The plan is
``dagrelay.ops.verbs.plan_backfill``; new batches start by publishing start_batch (like
``trigger``), so a backfill works against the deployed system; existing ones are rerun through
the engine, as the router would."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer

from dagrelay.cli.app import reports_errors
from dagrelay.cli.common import operator_engine
from dagrelay.cli.follow import DEFAULT_POLL_S, DEFAULT_TIMEOUT_S, Poll, Timeout
from dagrelay.cli.schedule import scheduled_runs
from dagrelay.cli.trigger import admit, publish, start_batch_message
from dagrelay.errors import DagrelayError
from dagrelay.ops import verbs as ops
from dagrelay.states import BatchStatus

if TYPE_CHECKING:
    from rich.table import Table


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
    latest: Annotated[
        bool,
        typer.Option(
            "--latest",
            help="Reprocessed batches move to the pipeline's current version (each refusal "
            "is reported and the backfill goes on).",
        ),
    ] = False,
    timeout: Timeout = DEFAULT_TIMEOUT_S,
    poll: Poll = DEFAULT_POLL_S,
) -> None:
    """One batch per day (batch id and params `date`/`ds`: the ISO date) or, for a pipeline
    with a schedule, per tick whose interval starts on those days (with the schedule's batch
    ids and params), never repeating a batch that succeeded unless asked. New batches start
    by publishing start_batch; existing ones are rerun from their failed tasks (or, with
    --reprocess all, from their roots)."""
    from rich.console import Console

    from dagrelay.store import reads
    from dagrelay.store import transitions as store
    from dagrelay.store.db import get_engine

    days = ops.backfill_dates(first.date(), last.date())
    with get_engine().connect() as conn:
        if not store.pipeline_tasks(conn, pipeline):
            raise DagrelayError(f"no pipeline {pipeline!r} in the database (it has no tasks)")
        ticks = scheduled_runs(conn, pipeline, days)  # None: not scheduled, one batch a day
        ids = [d.isoformat() for d in days] if ticks is None else [r.batch_id for _, r in ticks]
        existing = reads.batch_statuses(conn, pipeline, ids)
    if ticks is None:
        plan = ops.plan_backfill(days, existing, reprocess)
    else:
        plan = ops.plan_ticks(ticks, existing, reprocess)
    console = Console()
    console.print(plan_table(pipeline, plan))
    todo = [item for item in plan if item.action != ops.Action.SKIP]
    if dry_run:
        typer.echo(f"dry run: {len(todo)} of {len(plan)} days would run; nothing started")
        return
    runner = _Backfill(pipeline, max_concurrent, wait, time.monotonic() + timeout, poll)
    runner.latest = latest
    results = runner.run(todo)
    console.print(result_table(pipeline, results | runner.refused))
    failed = any(status != BatchStatus.SUCCESS for status in results.values())
    if runner.refused or (wait and failed):
        raise typer.Exit(1)


def plan_table(pipeline: str, plan: Sequence[ops.PlannedBatch]) -> Table:
    from rich.table import Table
    from rich.text import Text

    from dagrelay.cli.render import status_text

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
    from rich.table import Table

    from dagrelay.cli.render import status_text

    table = Table(title=f"backfill {pipeline}: started", title_justify="left")
    table.add_column("batch")
    table.add_column("status now")
    for batch_id, status in sorted(results.items()):
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
        self.latest = False
        self.refused: dict[str, str] = {}  # batch id -> why its rerun was refused

    def run(self, todo: Sequence[ops.PlannedBatch]) -> dict[str, str]:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

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
        from dagrelay.store import reads
        from dagrelay.store.db import get_engine

        with get_engine().connect() as conn:
            return reads.batch_statuses(conn, self.pipeline, self.launched)

    def _launch(self, item: ops.PlannedBatch) -> bool:
        if item.action == ops.Action.START:
            from dagrelay.config import get_settings

            settings = get_settings()
            message = start_batch_message(self.pipeline, item.batch_id, item.params, None)
            admit(None, message)
            publish(settings.project_id, settings.events_topic, message)
        else:
            try:
                everything = item.action == ops.Action.RERUN_ALL
                if not rerun_batch(self.pipeline, item.batch_id, everything, self.latest):
                    return False
            except DagrelayError as exc:  # reported; the other batches go on
                self.refused[item.batch_id] = f"REFUSED: {exc}"
                typer.echo(f"{self.pipeline}/{item.batch_id}: rerun refused: {exc}", err=True)
                return False
        self.launched.append(item.batch_id)
        return True


def rerun_batch(pipeline: str, batch_id: str, everything: bool, latest: bool = False) -> bool:
    """Run an existing batch again through ``Engine.rerun`` (each target with its
    downstream; see ``ops.rerun_targets``), in its version (with ``latest``: moved to the
    current one). False if there was nothing to rerun; a refusal raises."""
    from dagrelay.store import reads
    from dagrelay.store.db import get_engine

    with get_engine().connect() as conn:
        rows = reads.batch_rows(conn, pipeline, batch_id)
        parents = reads.batch_parents(conn, pipeline, batch_id)
    targets = ops.rerun_targets(rows, parents, everything=everything)
    if not targets:
        typer.echo(f"{pipeline}/{batch_id}: nothing to rerun", err=True)
        return False
    # One transaction for all of them: no task starts before every reset is committed.
    engine = operator_engine()
    engine.rerun_tasks(batch_id, targets, downstream=True, pipeline=pipeline, latest=latest)
    return True
