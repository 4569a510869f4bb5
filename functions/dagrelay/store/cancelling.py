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
    cancelled; ``status`` is the batch's status after it (CANCELLING while attempts or
    teardown tasks run)."""

    running: int
    waiting: int
    never_started: int
    status: str


@dataclass(frozen=True)
class Stopped:
    """The first half of a cancel: rows cancelled, and the tasks (map_index -1) whose rows are
    now CANCELLED: the fan-in counts them as done, so their teardown children can start (a
    mapped task's group whose instances still run is counted when the last one ends)."""

    waiting: int
    never_started: int
    task_ids: list[int]


def cancel_batch(
    conn: Connection, *, pipeline: str, batch_id: str, now: datetime
) -> Stopped | None:
    """RUNNING -> CANCELLING, its waiting and not yet created tasks CANCELLED (teardown tasks
    spared); None if the batch was not RUNNING."""
    params = {"pipeline": pipeline, "batch_id": batch_id, "now": now}
    if conn.execute(query("cancel_batch"), params).first() is None:
        return None
    waiting = conn.execute(query("cancel_waiting_tasks"), params).all()
    never_started = conn.execute(query("cancel_unstarted_tasks"), params).all()
    task_ids = [r.task_id for r in [*waiting, *never_started] if r.map_index == -1 and not r.busy]
    return Stopped(len(waiting), len(never_started), task_ids)


def settle(conn: Connection, *, pipeline: str, batch_id: str, now: datetime) -> tuple[int, str]:
    """(attempts still running, the batch's status): CANCELLED at once if nothing runs or
    waits to run (a teardown task), else CANCELLING."""
    params = {"pipeline": pipeline, "batch_id": batch_id, "now": now}
    running = conn.execute(query("running_tasks"), params).scalar_one()
    finished = conn.execute(query("finish_batch"), params).scalar_one_or_none()
    return running, finished or BatchStatus.CANCELLING


def lock_batch(conn: Connection, *, pipeline: str, batch_id: str) -> str | None:
    """The batch's status, its row locked until the transaction ends; None if no such batch."""
    params = {"pipeline": pipeline, "batch_id": batch_id}
    return conn.execute(query("lock_batch"), params).scalar_one_or_none()


def resume_reset(
    conn: Connection, *, pipeline: str, batch_id: str, reopened: list[int]
) -> tuple[int, list[int]] | None:
    """A CANCELLED batch's CANCELLED rows removed, and its teardown rows below them or below the
    groups reopened (task ids), the batch RUNNING: (rows removed, tasks whose rows went); None if
    the batch was not CANCELLED (nothing written)."""
    params = {"pipeline": pipeline, "batch_id": batch_id, "reopened": reopened}
    row = conn.execute(query("resume_reset"), params).one()
    if not row.resumed:
        return None
    return int(row.removed), list(row.task_ids)


def recount_fanin(conn: Connection, *, pipeline: str, batch_id: str, task_ids: list[int]) -> None:
    """The fan-in counters of the children of ``task_ids``, recounted from the rows left."""
    params = {"pipeline": pipeline, "batch_id": batch_id, "task_ids": task_ids}
    conn.execute(query("rerun_recount_fanin"), params)


def resume_start(
    conn: Connection, *, pipeline: str, batch_id: str, topic: str, now: datetime
) -> Created:
    """The rows (and run_task messages) of the tasks without a row that can be decided now."""
    params = {"pipeline": pipeline, "batch_id": batch_id, "topic": topic, "now": now}
    return _created(conn.execute(query("resume_start"), params).one())
