"""``dagrelay rerun BATCH TASK [--downstream] [--latest] [--pipeline P]``: reset a task (and its
descendants) and run it again through the engine, as the router would: in the batch's version,
or with --latest in the pipeline's current one (the rule: ``dagrelay.engine.versions``)."""

from __future__ import annotations

from typing import Annotated

import typer

from dagrelay.cli.app import reports_errors
from dagrelay.cli.common import PipelineOption, batch_pipeline, operator_engine


@reports_errors
def rerun(
    batch_id: Annotated[str, typer.Argument(help="The batch.")],
    task: Annotated[str, typer.Argument(help="The task to run again.")],
    *,
    downstream: Annotated[
        bool, typer.Option("--downstream", help="Also reset every task below it.")
    ] = False,
    latest: Annotated[
        bool,
        typer.Option(
            "--latest",
            help="Move the batch to the pipeline's current version first; refused, saying "
            "why, unless every task that changed is rerun.",
        ),
    ] = False,
    pipeline: PipelineOption = None,
    failed_items: Annotated[
        bool,
        typer.Option(
            "--failed-items",
            help="A mapped task: run only its failed items again (its descendants are reset).",
        ),
    ] = False,
) -> None:
    """Reset a task (and with --downstream its descendants) in a batch and run it again, in
    the batch's version; the batch resumes. Their earlier attempts stay in `dagrelay history`."""
    from rich.console import Console
    from rich.table import Table

    from dagrelay.cli.render import status_text
    from dagrelay.messages import Rerun
    from dagrelay.store import reads
    from dagrelay.store.db import get_engine

    with get_engine().connect() as conn:
        owner = batch_pipeline(conn, batch_id, pipeline)
        preview = reads.rerun_preview(conn, owner, batch_id, task, downstream or failed_items)
    reset = operator_engine().rerun(
        Rerun(
            batch_id=batch_id,
            task=task,
            pipeline=owner,
            downstream=downstream or failed_items,
            latest=latest,
            failed_items=failed_items,
        )
    )
    table = Table(title=f"{owner} / {batch_id}: reset", title_justify="left")
    for column in ("task", "was", "attempts"):
        table.add_column(column)
    for row in preview:
        table.add_row(row["name"], status_text(row["status"]), str(row["attempt"]))
    Console().print(table)
    if failed_items:
        typer.echo(f"{reset} failed items of {task} run again; batch {owner}/{batch_id} resumed")
        return
    typer.echo(f"{reset} task rows reset; batch {owner}/{batch_id} is RUNNING again")
