"""What the dashboard shows, as plain data: the JSON API's payloads (schema/openapi.json), which
the HTML pages render too. All of it is drawn from the read model, ``dagrelay.store.reads``."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from sqlalchemy import Connection

from dagrelay.engine.params import resolve
from dagrelay.errors import DagrelayError
from dagrelay.store import maps, reads

Row = dict[str, Any]
SUMMARY_FIELDS = (
    "pipeline",
    "batch_id",
    "version",
    "status",
    "triggered_by",
    "created_at",
    "finished_at",
    "duration_s",
    "task_counts",
    "total_tasks",
)


def summary(batch: reads.BatchSummary | reads.Batch) -> Row:
    return {k: batch[k] for k in SUMMARY_FIELDS}  # type: ignore[literal-required]


def batch_list(conn: Connection, pipeline: str | None, limit: int) -> Row:
    return {"batches": [summary(b) for b in reads.recent_batches(conn, pipeline, limit)]}


def batch_detail(conn: Connection, pipeline: str, batch_id: str) -> Row | None:
    batch = reads.read_batch(conn, pipeline, batch_id)
    if batch is None:
        return None
    return {
        "batch": summary(batch)
        | {
            "params": batch["params"],
            "start_task": batch["start_task"],
            "version": reads.batch_version(conn, pipeline, batch_id),
        },
        "tasks": sorted(batch["tasks"], key=lambda t: t["task"]),
        "edges": reads.batch_edges(conn, pipeline, batch_id),
        "attempts": batch["attempts"],
        "root_causes": [
            {k: c[k] for k in ("task", "status", "error", "took_down")}
            for c in batch["root_causes"]
            if c["task"] is not None  # the page names causes; lost ones have no row to name
        ],
        "dead_letters": batch["dead_letters"],
        "deadlines": batch["deadlines"],
        "map_groups": [
            vars(g) for g in maps.group_counts(conn, pipeline=pipeline, batch_id=batch_id)
        ],
    }


def pipeline_detail(conn: Connection, pipeline: str, limit: int) -> Row | None:
    tasks = [{"task": t.pop("name"), **t} for t in reads.pipeline_tasks(conn, pipeline)]
    recent = [summary(b) for b in reads.recent_batches(conn, pipeline, limit)]
    if not tasks and not recent:
        return None
    return {
        "pipeline": pipeline,
        "tasks": tasks,
        "edges": reads.pipeline_edges(conn, pipeline),
        "batches": recent,
    }


def task_detail(conn: Connection, pipeline: str, batch_id: str, task: str) -> Row | None:
    """One task of a batch: its row, its params as defined and as resolved for the batch, its
    output, and every attempt (run and attempt number, error, traceback)."""
    row = reads.task_in_batch(conn, pipeline, batch_id, task)
    if row is None:
        return None
    edges = reads.batch_edges(conn, pipeline, batch_id)
    resolved, problem = resolved_params(row["task_params"], row["batch_params"], pipeline, batch_id)
    return {
        "pipeline": pipeline,
        "batch_id": batch_id,
        "version": reads.batch_version(conn, pipeline, batch_id),
        **{k: row[k] for k in TASK_FIELDS},
        "attempt": row["attempt"] or 0,
        "params": row["task_params"],
        "resolved_params": resolved,
        "resolve_error": problem,
        "parents": sorted(e["parent"] for e in edges if e["child"] == task),
        "children": sorted(e["child"] for e in edges if e["parent"] == task),
        "attempts": reads.task_attempts(conn, pipeline, batch_id, task),
        "items": _items(conn, pipeline, batch_id, task),
    }


INSTANCES_SHOWN = 500


def _items(conn: Connection, pipeline: str, batch_id: str, task: str) -> Row | None:
    """A mapped task's group counts and first instances; None for a task that is not mapped."""
    groups = maps.group_counts(conn, pipeline=pipeline, batch_id=batch_id)
    group = next((g for g in groups if g.task == task), None)
    if group is None:
        return None
    found = maps.instances(
        conn, pipeline=pipeline, batch_id=batch_id, task=task, limit=INSTANCES_SHOWN
    )
    return {"group": vars(group), "instances": found}


TASK_FIELDS = (
    "task",
    "handler",
    "trigger_rule",
    "status",
    "created_at",
    "started_at",
    "finished_at",
    "next_attempt_at",
    "error",
    "output",
    "root_cause_task",
    "waiting_for",
    "waiting_since",
)


def resolved_params(
    params: dict[str, Any], batch_params: dict[str, Any], pipeline: str, batch_id: str
) -> tuple[dict[str, Any] | None, str | None]:
    """The task's params with the batch's ``{placeholders}`` filled in, as the engine does
    before calling the handler; or None and the reason they cannot be."""
    values = {**batch_params, "batch_id": batch_id, "pipeline": pipeline}
    try:
        return {k: resolve(v, values, f"params.{k}") for k, v in params.items()}, None
    except DagrelayError as exc:
        return None, str(exc)


def grid(conn: Connection, pipeline: str, limit: int) -> Row:
    """The latest batches of a pipeline, oldest first, with each task's status in each."""
    batches = list(reversed(reads.pipeline_grid(conn, pipeline, limit)))
    return {"pipeline": pipeline, "batches": batches}


PREVIEW_CHARS = 2_000


def preview(data: str | None, limit: int = PREVIEW_CHARS) -> str:
    """The start of a message's data, decoded from base64 as UTF-8 (bytes that are not text
    shown as escapes); the data as stored if it is not base64."""
    if not data:
        return ""
    usable = data[: len(data) - len(data) % 4]
    try:
        raw = base64.b64decode(usable, validate=True)
    except (binascii.Error, ValueError):
        return data[:limit]
    text = raw.decode("utf-8", errors="backslashreplace")
    return text if len(text) <= limit else text[:limit] + "…"


def _message_row(row: Row) -> Row:
    shown = {k: v for k, v in row.items() if k != "data"}
    return shown | {"preview": preview(row["data"])}


def rejected(conn: Connection, limit: int) -> Row:
    return {"rejected": [_message_row(r) for r in reads.rejected_messages(conn, limit)]}


def dead_letters(conn: Connection, limit: int) -> Row:
    return {"dead_letters": [_message_row(r) for r in reads.dead_letters(conn, limit)]}
