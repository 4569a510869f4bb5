"""``dagrelay rerun BATCH TASK [--downstream] [--pipeline P]``: reset a task (and its
descendants) and run it again through the engine, as the router would."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dagrelay.cli.app import reports_errors
from dagrelay.cli.common import PipelineOption, operator_engine
from dagrelay.cli.render import status_text
from dagrelay.config import get_settings
from dagrelay.errors import BadMessage
from dagrelay.messages import Rerun
from dagrelay.pubsub import PubSubPublisher
from dagrelay.store import reads
from dagrelay.store.db import get_engine


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
        owner = reads.task_pipeline(conn, task)
        if pipeline is not None and owner is not None and owner != pipeline:
            raise BadMessage(f"task {task!r} belongs to pipeline {owner!r}, not {pipeline!r}")
        preview = reads.rerun_preview(conn, batch_id, task, downstream)
    settings = get_settings()
    reset = operator_engine(PubSubPublisher(settings.project_id)).rerun(
        Rerun(batch_id=batch_id, task=task, pipeline=pipeline or owner, downstream=downstream)
    )
    table = Table(title=f"{owner} / {batch_id}: reset", title_justify="left")
    for column in ("task", "was", "attempts"):
        table.add_column(column)
    for row in preview:
        table.add_row(row["name"], status_text(row["status"]), str(row["attempt"]))
    Console().print(table)
    typer.echo(f"{reset} task rows reset; batch {owner}/{batch_id} is RUNNING again")
