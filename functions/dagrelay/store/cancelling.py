"""Cancel and resume a batch: the named queries of schema/sql/batches.sql and their rows. The
engine (``Engine.cancel_batch``, ``Engine.resume``) decides; these run in its transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from dagrelay.states import BatchStatus
from dagrelay.store.queries import query
from dagrelay.store.transitions import Created, _created


@dataclass(frozen=True)
class Cancelled:
    """What a cancel did: attempts left to finish, waiting rows and never-created rows
    cancelled; ``status`` is the batch's status after it (CANCELLING while attempts run)."""

    running: int
    waiting: int
    never_started: int
    status: str


def cancel_batch(
    conn: Connection, *, pipeline: str, batch_id: str, now: datetime
) -> Cancelled | None:
    """RUNNING -> CANCELLING, its waiting and not yet created tasks CANCELLED, and CANCELLED at
    once if no attempt runs; None if the batch was not RUNNING."""
    params = {"pipeline": pipeline, "batch_id": batch_id, "now": now}
    if conn.execute(query("cancel_batch"), params).first() is None:
        return None
    waiting = len(conn.execute(query("cancel_waiting_tasks"), params).all())
    never_started = len(conn.execute(query("cancel_unstarted_tasks"), params).all())
    running = conn.execute(query("running_tasks"), params).scalar_one()
    status: str = BatchStatus.CANCELLING
    if running == 0:
        status = conn.execute(query("finish_batch"), params).scalar_one()
    return Cancelled(running, waiting, never_started, status)


def lock_batch(conn: Connection, *, pipeline: str, batch_id: str) -> str | None:
    """The batch's status, its row locked until the transaction ends; None if no such batch."""
    params = {"pipeline": pipeline, "batch_id": batch_id}
    return conn.execute(query("lock_batch"), params).scalar_one_or_none()


def resume_reset(conn: Connection, *, pipeline: str, batch_id: str) -> int:
    """A CANCELLED batch's CANCELLED rows removed, the batch RUNNING; the rows removed."""
    row = conn.execute(query("resume_reset"), {"pipeline": pipeline, "batch_id": batch_id}).one()
    return int(row.removed)


def resume_start(
    conn: Connection, *, pipeline: str, batch_id: str, topic: str, now: datetime
) -> Created:
    """The rows (and run_task messages) of the tasks without a row that can be decided now."""
    params = {"pipeline": pipeline, "batch_id": batch_id, "topic": topic, "now": now}
    return _created(conn.execute(query("resume_start"), params).one())
