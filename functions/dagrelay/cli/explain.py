"""``dagrelay explain BATCH [--pipeline P]``: why a batch failed, as a tree of root causes
and the tasks each took down."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer

from dagrelay.cli.app import fail, reports_errors
from dagrelay.cli.common import PipelineOption, batch_pipeline
from dagrelay.states import TaskStatus

if TYPE_CHECKING:
    from rich.tree import Tree

    from dagrelay.store import reads


@reports_errors
def explain(
    batch_id: Annotated[str, typer.Argument(help="The batch.")],
    pipeline: PipelineOption = None,
) -> None:
    """Why a batch failed: each failed task with its error, and under it the tasks its
    failure took down (UPSTREAM_FAILED); and each deadline missed."""
    from rich.console import Console

    from dagrelay.store import reads
    from dagrelay.store.direct import reading

    with reading() as conn:
        pipeline = batch_pipeline(conn, batch_id, pipeline)
        report = reads.read_batches(conn, batch_id, pipeline)
    if not report:
        where = f" in pipeline {pipeline!r}" if pipeline else ""
        fail([f"no batch {batch_id!r}{where}"], 1)
    console = Console()
    for batch in report:
        console.print(
            explain_tree(
                batch["pipeline"],
                batch_id,
                batch["status"],
                batch["root_causes"],
                batch["version"],
                queued=[t for t in batch["tasks"] if t["status"] == TaskStatus.QUEUED],
                waiting=[t for t in batch["tasks"] if reads.waiting(t)],
                tolerated=tolerated_failures(batch["tasks"]),
                missed=[d for d in batch["deadlines"] if d["missed_at"] is not None],
            )
        )


def explain_tree(
    pipeline: str,
    batch_id: str,
    status: str,
    causes: Sequence[reads.RootCause],
    version: int | None = None,
    *,
    queued: Sequence[reads.Task] = (),
    tolerated: Sequence[reads.Task] = (),
    missed: Sequence[reads.Deadline] = (),
    waiting: Sequence[reads.Task] = (),
) -> Tree:
    from rich.text import Text
    from rich.tree import Tree

    from dagrelay.cli.render import status_text
    from dagrelay.store import reads

    label = Text.assemble(f"{pipeline} / {batch_id}  ", status_text(status))
    if version is not None:
        label.append(f"  version {version}", style="dim")
    tree = Tree(label)
    if not causes and not tolerated:
        tree.add(Text("nothing failed", style="green"))
    for deadline in missed:  # late (and maybe failed by it): one alert each
        at = deadline["missed_at"]
        text = reads.deadline_text(deadline, at) if at is not None else ""
        tree.add(Text.assemble(("deadline ", "bold"), (text, "yellow")))
    for task in queued:  # waiting, not failed: where each one is in its queue
        tree.add(Text.assemble((task["task"], "bold"), " ", status_text(TaskStatus.QUEUED),
                               f" {reads.queue_place(task)}"))  # fmt: skip
    for task in waiting:  # a sensor: what it waits for, since when
        tree.add(Text.assemble((task["task"], "bold"), " ", status_text(task["status"] or ""),
                               f" {reads.waiting(task)}"))  # fmt: skip
    for task in tolerated:  # succeeded with failed items it tolerates: recorded, not alerted
        tree.add(Text.assemble((task["task"], "bold"), " ", status_text(task["status"] or ""),
                               f" {task['error']}: recorded, not alerted"))  # fmt: skip
    for cause in causes:
        if cause["task"] is None:
            node = tree.add(Text("root cause no longer in the batch (rerun?)", style="dim"))
        else:
            error = (cause["error"] or "").splitlines()[0] if cause["error"] else "no error text"
            count = cause["attempts"]
            attempts = f"{count} attempt{'s' if count != 1 else ''}"
            label = Text.assemble(
                (cause["task"], "bold"),
                " ",
                status_text(TaskStatus.ERROR),
                f" after {attempts}: {error}",
            )
            node = tree.add(label)
        for casualty in cause["took_down"]:
            node.add(Text.assemble(f"{casualty} ", status_text(TaskStatus.UPSTREAM_FAILED)))
    return tree


def tolerated_failures(tasks: Sequence[reads.Task]) -> list[reads.Task]:
    """The mapped tasks that succeeded with failed items within their tolerance."""
    return [t for t in tasks if t["status"] == TaskStatus.SUCCESS and t["error"]]
