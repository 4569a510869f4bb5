"""Following a batch until it finishes (``status --wait``, ``trigger --wait``): redraw its
tasks while it runs, then say how it ended; exit code 0 only if it succeeded."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, TypeAlias

import typer

from dagrelay.cli.app import fail
from dagrelay.cli.common import batch_pipeline
from dagrelay.states import BatchStatus

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from dagrelay.store import reads

DEFAULT_TIMEOUT_S = 3600.0
DEFAULT_POLL_S = 2.0

Timeout = Annotated[
    float, typer.Option(min=0, help="Give up waiting after this many seconds (exit code 1).")
]
Poll = Annotated[float, typer.Option(min=0.01, help="Seconds between looks at the database.")]

# Called on every look with the connection and what was read: it may end the wait (fail).
Check: TypeAlias = "Callable[[Connection, list[reads.Batch]], None]"
UNFINISHED = frozenset({BatchStatus.RUNNING, BatchStatus.CANCELLING})


def follow(
    batch_id: str, pipeline: str | None, deadline: float, poll: float, check: Check | None = None
) -> None:
    """Follow the batch (it may not exist yet: its start message may be on its way) until it
    has finished or the deadline passes (exit code 1)."""
    from rich.console import Console, Group
    from rich.live import Live
    from rich.text import Text

    from dagrelay.cli.render import batch_table
    from dagrelay.store import reads
    from dagrelay.store.db import get_engine

    console = Console()
    report: list[reads.Batch] = []
    with Live(Text(f"waiting for batch {batch_id}..."), console=console) as live:
        while True:
            with get_engine().connect() as conn:
                report = reads.read_batches(conn, batch_id, pipeline)
                if pipeline is None and len(report) > 1:
                    batch_pipeline(conn, batch_id, pipeline)  # refuses, naming the pipelines
                if check is not None:
                    check(conn, report)
            if report:
                live.update(Group(*(batch_table(b) for b in report)), refresh=True)
            if report and all(b["status"] not in UNFINISHED for b in report):
                break
            if time.monotonic() > deadline:
                now = report[0]["status"] if report else "not started"
                fail([f"batch {batch_id!r} is still {now} after the timeout"], 1)
            time.sleep(poll)
    console.print()
    outcomes = ", ".join(f"{b['pipeline']}/{b['batch_id']} {b['status']}" for b in report)
    typer.echo(f"finished: {outcomes}")
    if any(b["status"] != BatchStatus.SUCCESS for b in report):
        raise typer.Exit(1)
