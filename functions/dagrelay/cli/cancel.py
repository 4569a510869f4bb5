"""``dagrelay cancel BATCH [--pipeline P]``: cancel a RUNNING batch through the engine."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from dagrelay.cli.app import fail, reports_errors
from dagrelay.cli.common import PipelineOption, batch_pipeline, operator_engine
from dagrelay.cli.render import batch_table
from dagrelay.config import get_settings
from dagrelay.messages import CancelBatch
from dagrelay.pubsub import PubSubPublisher
from dagrelay.store import reads
from dagrelay.store.db import get_engine


@reports_errors
def cancel(
    batch_id: Annotated[str, typer.Argument(help="The batch.")],
    pipeline: PipelineOption = None,
) -> None:
    """Cancel a RUNNING batch: its waiting tasks become CANCELLED, running ones finish."""
    with get_engine().connect() as conn:
        pipeline = batch_pipeline(conn, batch_id, pipeline)
        before = reads.read_batches(conn, batch_id, pipeline)
    if not before:
        fail([f"no batch {batch_id!r} in pipeline {pipeline!r}"], 1)
    cancelled = operator_engine(PubSubPublisher(get_settings().project_id)).cancel_batch(
        CancelBatch(pipeline=pipeline, batch_id=batch_id)
    )
    if cancelled:
        typer.echo(f"cancelled batch {pipeline}/{batch_id}")
    else:
        typer.echo(f"batch {pipeline}/{batch_id} is {before[0]['status']}: nothing to cancel")
    with get_engine().connect() as conn:
        Console().print(batch_table(reads.read_batches(conn, batch_id, pipeline)[0]))
