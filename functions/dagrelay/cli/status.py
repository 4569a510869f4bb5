"""``dagrelay status [BATCH] [--pipeline P] [--json] [--wait [--timeout S]]``: a batch's
tasks, or the recent batches; with --wait, follow the batch until it finishes."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dagrelay.cli.app import fail, reports_errors
from dagrelay.cli.common import PipelineOption, batch_pipeline
from dagrelay.cli.follow import DEFAULT_POLL_S, DEFAULT_TIMEOUT_S, Poll, Timeout, follow

if TYPE_CHECKING:
    from dagrelay.store import reads


@reports_errors
def status(
    batch_id: Annotated[
        str | None, typer.Argument(help="The batch to show (default: the recent batches).")
    ] = None,
    *,
    pipeline: PipelineOption = None,
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
        follow(batch_id, pipeline, time.monotonic() + timeout, poll)
        return
    from rich.console import Console

    from dagrelay.cli.render import batch_table, dead_letter_table, json_default
    from dagrelay.store import reads
    from dagrelay.store.direct import reading

    with reading() as conn:
        pipeline = batch_pipeline(conn, batch_id, pipeline)
        report = reads.read_batches(conn, batch_id, pipeline)
    if not report:
        fail([f"no batch {batch_id!r} in pipeline {pipeline!r}"], 1)
    if as_json:
        legacy = [reads.legacy_report(b) for b in report]
        typer.echo(json.dumps({"batches": legacy}, default=json_default, indent=2))
        return
    console = Console()
    for batch in report:
        console.print(batch_table(batch))
        if batch["dead_letters"]:
            console.print(dead_letter_table(batch["dead_letters"]))


def _recent(pipeline: str | None, limit: int, as_json: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    from dagrelay.cli.render import duration, json_default, status_text, time_text
    from dagrelay.store import reads
    from dagrelay.store.direct import reading

    with reading() as conn:
        batches = reads.recent_batches(conn, pipeline, limit)
    if as_json:
        listed = [_listed(b) for b in batches]
        typer.echo(json.dumps({"batches": listed}, default=json_default, indent=2))
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
            f"{b['tasks_finished']}/{b['tasks_in_scope']}",
        )
    Console().print(table)


def _listed(batch: reads.BatchSummary) -> dict[str, Any]:
    """A recent batch in ``status --json``: tasks_total (in its scope) and tasks_done."""
    fields = ("pipeline", "batch_id", "status", "triggered_by", "created_at", "finished_at")
    listed: dict[str, Any] = {k: batch[k] for k in fields}  # type: ignore[literal-required]
    return listed | {"tasks_total": batch["tasks_in_scope"], "tasks_done": batch["tasks_finished"]}
