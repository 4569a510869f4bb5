"""``dagrelay history BATCH TASK [--traceback]``: every attempt of a task in a batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dagrelay.cli.app import fail, reports_errors
from dagrelay.cli.common import PipelineOption, batch_pipeline
from dagrelay.ops import verbs as ops

if TYPE_CHECKING:
    from rich.table import Table


@reports_errors
def history(
    batch_id: Annotated[str, typer.Argument(help="The batch.")],
    task: Annotated[str, typer.Argument(help="The task.")],
    show_traceback: Annotated[
        bool, typer.Option("--traceback", help="Print each failed attempt's traceback.")
    ] = False,
    pipeline: PipelineOption = None,
) -> None:
    """Every attempt of a task in a batch, across reruns: when, where, how it ended."""
    from rich.console import Console

    from dagrelay.cli.render import problem
    from dagrelay.store import reads
    from dagrelay.store.direct import reading

    with reading() as conn:
        owner = batch_pipeline(conn, batch_id, pipeline)
        attempts = ops.number_runs(reads.task_history(conn, owner, batch_id, task))
        row = reads.task_row(conn, owner, batch_id, task)
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
    from rich.table import Table

    from dagrelay.cli.render import duration, status_text, time_text

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
