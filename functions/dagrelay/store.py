"""The store: runs the named queries of schema/queries.sql and maps their rows. No decisions
are made here; the engine decides, the SQL enforces."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row

from dagrelay.publisher import OutgoingMessage
from dagrelay.queries import query
from dagrelay.states import TaskStatus


@dataclass(frozen=True)
class CreatedTask:
    log_id: int
    task_id: int
    status: TaskStatus
    root_cause_log_id: int | None


@dataclass(frozen=True)
class Created:
    """What a statement that creates task_log rows returns: the rows and their messages."""

    tasks: list[CreatedTask]
    messages: list[OutgoingMessage]
    batch_created: bool = False


@dataclass(frozen=True)
class Claim:
    log_id: int
    attempt: int
    pipeline: str
    task_id: int
    task: str
    handler: str
    params: Mapping[str, Any]
    timeout_s: int
    batch_params: Mapping[str, Any]
    parent_outputs: Mapping[str, Any]
    lease_expires_at: datetime


@dataclass(frozen=True)
class TaskState:
    task_id: int
    pipeline: str
    status: TaskStatus | None  # None: the task has no row in this batch
    attempt: int | None
    batch_status: str | None


@dataclass(frozen=True)
class Transition:
    """The parent side of a fan-in step: a task that reached a terminal state."""

    task_id: int
    outcome: TaskStatus
    root_cause_log_id: int | None = None


def _created(rows: Sequence[Row[Any]]) -> Created:
    tasks, messages, batch_created = [], [], False
    for row in rows:
        if row.kind == "task":
            tasks.append(
                CreatedTask(row.log_id, row.task_id, TaskStatus(row.status), row.root_cause_log_id)
            )
        elif row.kind == "message":
            messages.append(
                OutgoingMessage(
                    topic=row.topic,
                    payload=row.payload,
                    attributes=row.attributes,
                    outbox_id=row.outbox_id,
                )
            )
        else:
            batch_created = True
    return Created(tasks, messages, batch_created)


def start_batch(
    conn: Connection,
    *,
    pipeline: str,
    batch_id: str,
    params: Mapping[str, Any],
    start_task: str | None,
    triggered_by: str,
    message_id: str | None,
    topic: str,
    now: datetime,
) -> Created:
    rows = conn.execute(
        query("start_batch"),
        {
            "pipeline": pipeline,
            "batch_id": batch_id,
            "params": json.dumps(dict(params)),
            "start_task": start_task,
            "triggered_by": triggered_by,
            "message_id": message_id,
            "topic": topic,
            "now": now,
        },
    ).all()
    return _created(rows)


def pipeline_tasks(conn: Connection, pipeline: str) -> list[str]:
    return list(conn.execute(query("pipeline_tasks"), {"pipeline": pipeline}).scalars())


def claim(
    conn: Connection, *, batch_id: str, task: str, now: datetime, worker: str
) -> Claim | None:
    row = conn.execute(
        query("claim_task"), {"batch_id": batch_id, "task": task, "now": now, "worker": worker}
    ).one_or_none()
    if row is None:
        return None
    return Claim(
        log_id=row.log_id,
        attempt=row.attempt,
        pipeline=row.pipeline,
        task_id=row.task_id,
        task=row.name,
        handler=row.handler,
        params=row.params,
        timeout_s=row.timeout_s,
        batch_params=row.batch_params,
        parent_outputs=row.parent_outputs,
        lease_expires_at=row.lease_expires_at,
    )


def task_state(conn: Connection, *, batch_id: str, task: str) -> TaskState | None:
    row = conn.execute(query("task_state"), {"batch_id": batch_id, "task": task}).one_or_none()
    if row is None:
        return None
    status = TaskStatus(row.status) if row.status is not None else None
    return TaskState(row.task_id, row.pipeline, status, row.attempt, row.batch_status)


def finish_attempt(
    conn: Connection,
    *,
    log_id: int,
    attempt: int,
    status: TaskStatus,
    output: Mapping[str, Any] | None,
    error: str | None,
    now: datetime,
) -> bool:
    """PROCESSING -> status for this attempt. False: the row had moved on (not written)."""
    row = conn.execute(
        query("finish_attempt"),
        {
            "log_id": log_id,
            "attempt": attempt,
            "status": status.value,
            "output": json.dumps(output) if output is not None else None,
            "error": error,
            "now": now,
        },
    ).one_or_none()
    return row is not None


def advance_children(
    conn: Connection, *, batch_id: str, finished: Sequence[Transition], topic: str, now: datetime
) -> Created:
    rows = conn.execute(
        query("advance_children"),
        {
            "batch_id": batch_id,
            "parent_ids": [t.task_id for t in finished],
            "outcomes": [t.outcome.value for t in finished],
            "root_causes": [t.root_cause_log_id or 0 for t in finished],
            "topic": topic,
            "now": now,
        },
    ).all()
    return _created(rows)


def finish_batch(conn: Connection, *, pipeline: str, batch_id: str, now: datetime) -> str | None:
    """RUNNING -> SUCCESS/FAILED if nothing is open; the new status, or None (not written)."""
    return conn.execute(
        query("finish_batch"), {"pipeline": pipeline, "batch_id": batch_id, "now": now}
    ).scalar_one_or_none()


def mark_published(conn: Connection, ids: Sequence[int], now: datetime) -> None:
    conn.execute(query("mark_published"), {"ids": list(ids), "now": now})


def mark_publish_failed(conn: Connection, ids: Sequence[int], error: str) -> None:
    conn.execute(query("mark_publish_failed"), {"ids": list(ids), "error": error[:2000]})


def record_rejected_message(
    conn: Connection,
    *,
    message_id: str | None,
    attributes: Mapping[str, str],
    data: str | None,
    reason: str,
    now: datetime,
) -> None:
    conn.execute(
        query("record_rejected_message"),
        {
            "message_id": message_id,
            "attributes": json.dumps(dict(attributes)),
            "data": data,
            "reason": reason,
            "now": now,
        },
    )


def lock_unpublished_outbox(
    conn: Connection, *, cutoff: datetime, limit: int
) -> list[OutgoingMessage]:
    rows = conn.execute(query("lock_unpublished_outbox"), {"cutoff": cutoff, "limit": limit}).all()
    return [OutgoingMessage(r.topic, r.payload, r.attributes, r.outbox_id) for r in rows]
