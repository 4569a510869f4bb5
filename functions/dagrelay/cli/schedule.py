"""The ``dagrelay schedule`` verbs:

    dagrelay schedule list
    dagrelay schedule pause PIPELINE
    dagrelay schedule resume PIPELINE

Schedules are declared in pipeline files (``schedule:``) or written into the schedules table;
the sweep starts their ticks (``dagrelay.engine.schedules``). Times are shown in each
schedule's own zone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dagrelay.cli.app import PLAIN_HELP, Group, app, reports_errors
from dagrelay.errors import DagrelayError
from dagrelay.ops import verbs as ops

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text
    from sqlalchemy import Connection

schedule_app = typer.Typer(
    help="Recurring schedules (the schedules table).",
    no_args_is_help=True,
    rich_markup_mode=PLAIN_HELP,
    cls=Group,
)
app.add_typer(schedule_app, name="schedule")

Pipeline = Annotated[str, typer.Argument(help="The scheduled pipeline.")]


@schedule_app.command("list")
@reports_errors
def schedule_list() -> None:
    """Every schedule: cron, zone, next and last run (in the schedule's zone), its catch-up
    and overlap policy, how many runs wait, paused or its error."""
    from rich.console import Console

    from dagrelay.store import schedules as store
    from dagrelay.store.direct import reading

    with reading() as conn:
        rows = store.rows(conn)
    if not rows:
        typer.echo("no schedules (declare one under schedule: in a pipeline file)")
        return
    Console(width=200).print(schedule_table(rows))


COLUMNS = (
    "pipeline",
    "cron",
    "zone",
    "next run",
    "last run",
    "last batch",
    "runs",
    "waiting",
    "state",
)


def schedule_table(rows: list[dict[str, Any]], now: datetime | None = None) -> Table:
    from rich.table import Table

    table = Table(title="schedules", title_justify="left")
    for column in COLUMNS:
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["pipeline"],
            row["cron"],
            row["timezone"],
            _local(row["next_run_at"], row["timezone"], "at the next sweep"),
            _local(row["last_tick_at"], row["timezone"], "-"),
            row["last_batch_id"] or "-",
            _policy(row),
            _waiting(row, now or datetime.now(UTC)),
            _state(row),
        )
    return table


def _policy(row: Mapping[str, Any]) -> str:
    """Catch-up, the cap on running batches and what a tick finding them running does:
    ``all<=10, max 1, wait`` (catch-up runs always wait), ``latest, max 1, skip``."""
    from dagrelay.engine.schedule_rules import Catchup, Overlap

    catchup = f"all<={row['catchup_limit']}" if row["catchup"] == Catchup.ALL else "latest"
    drops = row["catchup"] == Catchup.LATEST and row["overlap"] == Overlap.SKIP
    return f"{catchup}, max {row['max_active_batches']}, {'skip' if drops else 'wait'}"


def _waiting(row: Mapping[str, Any], now: datetime) -> str:
    """How many due runs have not started (they wait for a sweep or a free slot)."""
    from dagrelay.engine.schedule_rules import Schedule, waiting_runs

    try:
        return str(waiting_runs(Schedule.from_row(row), now))
    except DagrelayError:  # a cron that never fires, a cron croniter refuses: said in state
        return "-"


def _local(value: datetime | None, name: str, missing: str) -> str:
    if value is None:
        return missing
    from dagrelay.engine.ticks import ScheduleError, zone

    try:
        return value.astimezone(zone(name)).strftime("%Y-%m-%d %H:%M %Z")
    except ScheduleError:  # a zone PostgreSQL knows and Python does not
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _state(row: Mapping[str, Any]) -> Text:
    from rich.text import Text

    if row["last_error"]:
        return Text(f"error: {row['last_error']}", style="red")
    return Text("paused", style="yellow") if row["paused"] else Text("active", style="green")


@schedule_app.command("pause")
@reports_errors
def schedule_pause(pipeline: Pipeline) -> None:
    """Stop starting ticks (the running batches go on)."""
    _set_paused(pipeline, paused=True)


@schedule_app.command("resume")
@reports_errors
def schedule_resume(pipeline: Pipeline) -> None:
    """Start ticks again, from the next one: ticks missed while paused are not started."""
    _set_paused(pipeline, paused=False)


def _set_paused(pipeline: str, *, paused: bool) -> None:
    """The pipeline's cron schedule and its asset schedule (on_assets), whichever it has."""
    from dagrelay.store import assets as asset_store
    from dagrelay.store import schedules as store
    from dagrelay.store.db import get_engine

    now = datetime.now(UTC)
    with get_engine().begin() as conn:
        found = []
        for kind, kept in (("schedule", store), ("asset schedule", asset_store)):
            changed = kept.set_paused(conn, pipeline, paused, now)
            if changed or kept.row(conn, pipeline) is not None:
                found.append((kind, changed))
    if not found:
        raise DagrelayError(f"no schedule for pipeline {pipeline!r}")
    state = "paused" if paused else "resumed"
    for kind, changed in found:
        typer.echo(f"{kind} {pipeline}: {state}" if changed else f"{kind} {pipeline}: already so")


def scheduled_runs(
    conn: Connection, pipeline: str, days: Sequence[date]
) -> list[tuple[date, ops.ScheduledRun]] | None:
    """For ``backfill``: the runs of the pipeline's schedule whose interval starts on one of
    ``days`` (first to last), or None if the pipeline has no schedule."""
    from dagrelay.engine.schedule_rules import Schedule, backfill_ticks
    from dagrelay.store import schedules as store

    row = store.row(conn, pipeline)
    if row is None:
        return None
    ticks = backfill_ticks(Schedule.from_row(row), days[0], days[-1], ops.MAX_BACKFILL_DAYS)
    return [
        (tick.interval_start.date(), ops.ScheduledRun(batch_id, tick.params()))
        for batch_id, tick in ticks
    ]
