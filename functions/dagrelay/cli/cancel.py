"""``dagrelay cancel BATCH [--pipeline P]``: cancel a RUNNING batch through the engine, and say
exactly what happened; ``dagrelay resume BATCH [--pipeline P]``: run what the cancel stopped."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from dagrelay.cli.app import fail, reports_errors
from dagrelay.cli.common import PipelineOption, batch_pipeline, operator_engine

if TYPE_CHECKING:
    from dagrelay.store.cancelling import Cancelled

Batch = Annotated[str, typer.Argument(help="The batch.")]


@reports_errors
def cancel(batch_id: Batch, pipeline: PipelineOption = None) -> None:
    """Cancel a RUNNING batch: its waiting tasks and those not started yet become CANCELLED;
    running ones finish (the batch is CANCELLING until the last ends, then CANCELLED).
    `dagrelay resume` runs what the cancel stopped."""
    from dagrelay.messages import CancelBatch
    from dagrelay.store import reads
    from dagrelay.store.db import get_engine

    with get_engine().connect() as conn:
        pipeline = batch_pipeline(conn, batch_id, pipeline)
        before = reads.read_batches(conn, batch_id, pipeline)
    if not before:
        fail([f"no batch {batch_id!r} in pipeline {pipeline!r}"], 1)
    done = operator_engine().cancel_batch(CancelBatch(pipeline=pipeline, batch_id=batch_id))
    if done is None:
        typer.echo(f"batch {pipeline}/{batch_id} is {before[0]['status']}: nothing to cancel")
    else:
        typer.echo(f"batch {pipeline}/{batch_id} is {done.status}: {said(done)}")
    _show(batch_id, pipeline)


def said(done: Cancelled) -> str:
    """``2 running tasks will finish; 3 waiting tasks cancelled; 4 never-started tasks
    cancelled``."""
    return (
        f"{_tasks(done.running, 'running')} will finish; "
        f"{_tasks(done.waiting, 'waiting')} cancelled; "
        f"{_tasks(done.never_started, 'never-started')} cancelled"
    )


def _tasks(count: int, kind: str) -> str:
    return f"{count} {kind} task{'' if count == 1 else 's'}"


@reports_errors
def resume(batch_id: Batch, pipeline: PipelineOption = None) -> None:
    """Resume a CANCELLED batch: run the tasks the cancel stopped, keeping what had ended
    (succeeded or failed); the batch then ends by the usual rules."""
    from dagrelay.messages import Resume
    from dagrelay.store.db import get_engine

    with get_engine().connect() as conn:
        pipeline = batch_pipeline(conn, batch_id, pipeline)
    resumed = operator_engine().resume(Resume(pipeline=pipeline, batch_id=batch_id))
    typer.echo(
        f"batch {pipeline}/{batch_id} resumed: {resumed.reset} cancelled task rows reset, "
        f"{resumed.started} started now (the rest follow their parents)"
    )
    _show(batch_id, pipeline)


def _show(batch_id: str, pipeline: str) -> None:
    from rich.console import Console

    from dagrelay.cli.render import batch_table
    from dagrelay.store import reads
    from dagrelay.store.db import get_engine

    with get_engine().connect() as conn:
        Console().print(batch_table(reads.read_batches(conn, batch_id, pipeline)[0]))
