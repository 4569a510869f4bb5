"""How the CLI draws batches, durations and times (rich tables and text)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.table import Table
from rich.text import Text

from dagrelay.states import BatchStatus, TaskStatus
from dagrelay.store import reads

# Every task and batch status (tests/unit/test_vocabulary.py checks: all of them, nothing else).
STATUS_STYLES: dict[str, str] = {
    TaskStatus.NEW: "blue",
    TaskStatus.PROCESSING: "cyan",
    BatchStatus.RUNNING: "cyan",
    TaskStatus.RETRY: "yellow",
    TaskStatus.QUEUED: "yellow",
    TaskStatus.SUCCESS: "green",  # and BatchStatus.SUCCESS, the same word
    TaskStatus.ERROR: "bold red",
    BatchStatus.FAILED: "bold red",
    TaskStatus.UPSTREAM_FAILED: "red",
    TaskStatus.SKIPPED: "dim",
    BatchStatus.CANCELLING: "yellow",
    TaskStatus.CANCELLED: "dim",  # and BatchStatus.CANCELLED
}


def json_default(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def batch_table(batch: Mapping[str, Any]) -> Table:
    """A batch (``dagrelay.store.reads.Batch``) as a table of its task rows in the order they
    ran: its status in the title, who triggered it and when in the caption."""
    title = Text.assemble(
        f"{batch['pipeline']} / {batch['batch_id']}  ",
        status_text(batch["status"]),
        (f"  version {batch['version']}", "dim"),
    )
    table = Table(title=title, caption=caption(batch), title_justify="left")
    table.add_column("task", overflow="fold")
    table.add_column("status", no_wrap=True)
    table.add_column("attempt", justify="right")
    table.add_column("started")
    table.add_column("duration", justify="right")
    table.add_column("error / root cause", overflow="fold", min_width=10)
    for task in batch["tasks"]:
        if task["status"] is None:  # no row in the batch yet
            continue
        table.add_row(
            Text(task["task"]),
            status_text(task["status"]),
            str(task["attempt"]),
            time_text(task["started_at"], "%H:%M:%S"),
            duration(task["duration_s"]),
            Text(problem(task)),
        )
    return table


def dead_letter_table(letters: Sequence[Mapping[str, Any]]) -> Table:
    """Messages Pub/Sub gave up delivering for this batch (the dead_letters table)."""
    table = Table(title=Text("dead letters", style="bold red"), title_justify="left")
    for column in ("received", "action", "task", "deliveries", "reason"):
        table.add_column(column, overflow="fold")
    for letter in letters:
        table.add_row(
            time_text(letter["received_at"], "%H:%M:%S"),
            letter["action"] or "",
            letter["task"] or "",
            str(letter["delivery_attempts"] or ""),
            letter["reason"],
        )
    return table


def status_text(value: str) -> Text:
    return Text(value, style=STATUS_STYLES.get(value, ""))


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def time_text(value: datetime | None, layout: str = "%Y-%m-%d %H:%M:%S %Z") -> str:
    return "" if value is None else value.strftime(layout)


def caption(batch: Mapping[str, Any]) -> str:
    text = f"triggered by {batch['triggered_by']} at {time_text(batch['created_at'])}"
    if batch["finished_at"] is not None:
        text += f", finished at {time_text(batch['finished_at'])}"
    now = datetime.now(UTC)
    for deadline in batch.get("deadlines", ()):
        text += "\ndeadline " + reads.deadline_text(deadline, now)
    return text


def problem(task: Mapping[str, Any]) -> str:
    if task["status"] == TaskStatus.QUEUED:
        return f"waiting: {reads.queue_place(task)}"
    if waiting := reads.waiting(task):
        return waiting
    if task["root_cause_task"]:
        return f"upstream: {task['root_cause_task']} failed"
    error = str(task["error"] or "")
    return error.splitlines()[0][:200] if error else ""
