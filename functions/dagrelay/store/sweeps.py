"""The sweeper's repairs through the named queries of ``schema/sql/sweeper.sql``: each set-based
repair as one statement, the same repair for one row (what the sweeper falls back to when the
statement fails, so one bad row does not stop the others), and where a failed repair is
recorded (the task row's ``error``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row

from dagrelay.states import TaskStatus
from dagrelay.store.outbox import OutgoingMessage
from dagrelay.store.queries import query


@dataclass(frozen=True)
class TaskRow:
    """A task_log row the sweeper repairs, with the status and attempt it saw (the fence of
    ``record_error``)."""

    log_id: int
    pipeline: str
    batch_id: str
    task: str
    status: str
    attempt: int


def stale_tasks(conn: Connection, *, cutoff: datetime, now: datetime, limit: int) -> list[TaskRow]:
    """NEW or due RETRY tasks whose message was lost, locked until the caller commits."""
    params = {"cutoff": cutoff, "now": now, "limit": limit}
    rows = conn.execute(query("stale_tasks"), params).all()
    return [TaskRow(r.log_id, r.pipeline, r.batch_id, r.name, r.status, r.attempt) for r in rows]


def requeue_tasks(
    conn: Connection, ids: Sequence[int], *, topic: str, now: datetime
) -> list[OutgoingMessage]:
    params = {"ids": list(ids), "topic": topic, "now": now}
    rows = conn.execute(query("requeue_tasks"), params).all()
    return [_message(r) for r in rows]


def stalled_queues(conn: Connection, *, cutoff: datetime) -> list[TaskRow]:
    """The oldest queued task of each queue that waited since before ``cutoff``."""
    rows = conn.execute(query("stalled_queues"), {"cutoff": cutoff}).all()
    return [
        TaskRow(r.log_id, r.pipeline, r.batch_id, "", TaskStatus.QUEUED, r.attempt) for r in rows
    ]


def release_queues(
    conn: Connection, ids: Sequence[int], *, topic: str, now: datetime
) -> list[OutgoingMessage]:
    params = {"ids": list(ids), "topic": topic, "now": now}
    return [_message(r) for r in conn.execute(query("release_queues"), params).all()]


def finish_idle_batches(
    conn: Connection, *, cutoff: datetime, now: datetime
) -> list[tuple[str, str, str]]:
    """(pipeline, batch_id, new status) of every batch finished."""
    rows = conn.execute(query("finish_idle_batches"), {"cutoff": cutoff, "now": now}).all()
    return [(r.pipeline, r.batch_id, r.status) for r in rows]


def idle_batch_candidates(conn: Connection, *, cutoff: datetime) -> list[tuple[str, str]]:
    rows = conn.execute(query("idle_batch_candidates"), {"cutoff": cutoff}).all()
    return [(r.pipeline, r.batch_id) for r in rows]


def record_error(conn: Connection, row: TaskRow, error: str) -> bool:
    """Store why a repair of ``row`` failed on the row (fenced by its status and attempt)."""
    params = {"log_id": row.log_id, "status": row.status, "attempt": row.attempt, "error": error}
    return conn.execute(query("record_sweep_error"), params).rowcount == 1


def _message(r: Row[Any]) -> OutgoingMessage:
    return OutgoingMessage(r.topic, r.payload, r.attributes, r.outbox_id)
