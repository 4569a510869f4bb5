"""``dagrelay assets [--json]``: every asset (who updates it, who waits for it, its last update)
and every asset schedule (what it waits for, what is pending, the batches it started).

A read verb: it reads through ``store/direct.py::reading`` (plain pg8000, READ ONLY), importing
what it uses when it runs (ARCHITECTURE.md, "The CLI's imports")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dagrelay.cli.app import reports_errors

if TYPE_CHECKING:
    from rich.table import Table


@reports_errors
def assets(
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """Every asset and every asset schedule (pipelines started when assets are updated)."""
    from dagrelay.store import assets as store
    from dagrelay.store.direct import reading

    with reading() as conn:
        found, waiting = store.assets(conn), store.schedules(conn)
    if as_json:
        import json

        typer.echo(json.dumps({"assets": found, "schedules": waiting}, default=str, indent=2))
        return
    if not found and not waiting:
        typer.echo("no assets (declare them with updates: on a task, on_assets: on a pipeline)")
        return
    from rich.console import Console

    console = Console(width=200)
    console.print(asset_table(found))
    if waiting:
        console.print(schedule_table(waiting))


def _names(values: Sequence[str] | None) -> str:
    return ", ".join(values or ()) or "-"


def asset_table(rows: list[dict[str, Any]]) -> Table:
    from rich.table import Table

    from dagrelay.cli.render import time_text

    table = Table(title="assets", title_justify="left")
    for column in ("asset", "updated by", "waited for by", "events", "last update", "by batch"):
        table.add_column(column, overflow="fold")
    for row in rows:
        last = row["last_updated_at"]
        by = f"{row['last_pipeline']}/{row['last_batch_id']}" if last is not None else "-"
        if row["last_partition"] is not None:
            by += f" ({row['last_partition']})"
        table.add_row(
            row["asset"],
            _names(row["producers"]),
            _names(row["consumers"]),
            str(row["events"]),
            time_text(last, "%Y-%m-%d %H:%M:%S") or "never",
            by,
        )
    return table


def schedule_table(rows: list[dict[str, Any]]) -> Table:
    from rich.table import Table

    table = Table(title="asset schedules", title_justify="left")
    for column in ("pipeline", "waits for", "pending", "batch id", "runs", "last batch", "state"):
        table.add_column(column, overflow="fold")
    for row in rows:
        state = "paused" if row["paused"] else "active"
        if row["last_error"]:
            state += f": {row['last_error'].splitlines()[0][:120]}"
        table.add_row(
            row["pipeline"],
            _names(row["assets"]),
            _names(row["pending"]),
            row["batch_id_template"],
            str(row["runs"]),
            row["last_batch_id"] or "-",
            state,
        )
    return table
