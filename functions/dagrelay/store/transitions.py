"""The store: runs the named queries of schema/sql/ and maps their rows. No decisions are
made here; the engine decides, the SQL enforces."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row

from dagrelay.bounds import stored_error_or_none
from dagrelay.retry_policy import RetryPolicy
from dagrelay.states import BatchStatus, TaskStatus
from dagrelay.store.outbox import OutgoingMessage
from dagrelay.store.queries import query
from dagrelay.store.records import DeadLetter, Rejection


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
    batch_running: bool = True  # finish_attempt: False in a batch being cancelled
    updates_assets: bool = False  # finish_attempt: its task updates assets (asset events)


@dataclass(frozen=True)
class AttemptRef:
    """One attempt of one task in one batch: what every write about it is fenced by."""

    log_id: int
    attempt: int
    pipeline: str
    batch_id: str
    task_id: int
    task: str
    timeout_s: int
    policy: RetryPolicy
    poll_at: datetime | None = None  # a deferred attempt's poll, as read: fences its re-deferral
    map_index: int = -1  # an instance of a mapped task: its item's index; -1 otherwise
    limited: bool = False  # holds a pool slot or a max_active place: its end releases waiters


def _ref(row: Row[Any], batch_id: str | None = None) -> AttemptRef:
    return AttemptRef(
        log_id=row.log_id,
        attempt=row.attempt,
        pipeline=row.pipeline,
        batch_id=batch_id or row.batch_id,
        task_id=row.task_id,
        task=row.name,
        timeout_s=row.timeout_s,
        policy=RetryPolicy(
            max_retries=row.max_retries,
            delay_s=row.retry_delay_s,
            backoff=row.retry_backoff,
            max_delay_s=row.retry_max_delay_s,
        ),
        poll_at=getattr(row, "poll_at", None),
        map_index=getattr(row, "map_index", -1),
        limited=bool(getattr(row, "limited", False)),
    )


@dataclass(frozen=True)
class Claim:
    ref: AttemptRef
    handler: str
    params: Mapping[str, Any]
    batch_params: Mapping[str, Any]
    parent_outputs: Mapping[str, Any]
    lease_expires_at: datetime
    job: Mapping[str, Any] | None = None  # a deferred attempt's pending work
    item: Any = None  # an instance of a mapped task: its item
    live: bool = True  # a deferred attempt's batch still runs it (not cancelled meanwhile)
    version_id: int | None = None  # the batch's pipeline version (pipeline_versions)


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


def _created(row: Row[Any]) -> Created:
    """A statement's one row: ``tasks`` and ``messages`` (JSON arrays of the rows it created
    and the outbox rows it wrote), and for start_batch ``batch_created``."""
    tasks = [
        CreatedTask(t["log_id"], t["task_id"], TaskStatus(t["status"]), t.get("root_cause_log_id"))
        for t in row.tasks
    ]
    messages = [OutgoingMessage.from_json(m) for m in row.messages]
    return Created(
        tasks,
        messages,
        bool(getattr(row, "batch_created", False)),
        bool(getattr(row, "batch_running", True)),
        bool(getattr(row, "updates_assets", False)),
    )


def pin_version(
    conn: Connection, *, pipeline: str, batch_id: str, now: datetime
) -> tuple[bool, int | None]:
    """(whether the batch exists already, the version a new batch runs: None when it exists or
    the pipeline has no tasks)."""
    row = conn.execute(
        query("pin_version"), {"pipeline": pipeline, "batch_id": batch_id, "now": now}
    ).one()
    return bool(row.batch_exists), row.version_id


def version_task_names(conn: Connection, version_id: int) -> list[str]:
    return list(conn.execute(query("version_task_names"), {"version_id": version_id}).scalars())


def task_pipelines(conn: Connection, *, batch_id: str, task: str) -> list[str]:
    """The pipelines having a batch ``batch_id`` whose version has a task ``task``."""
    rows = conn.execute(query("task_pipelines"), {"batch_id": batch_id, "task": task})
    return list(rows.scalars())


def start_batch(
    conn: Connection,
    *,
    pipeline: str,
    batch_id: str,
    version_id: int,
    params: Mapping[str, Any],
    start_task: str | None,
    triggered_by: str,
    message_id: str | None,
    topic: str,
    now: datetime,
    trace_context: str | None = None,
) -> Created:
    row = conn.execute(
        query("start_batch"),
        {
            "pipeline": pipeline,
            "batch_id": batch_id,
            "version_id": version_id,
            "params": json.dumps(dict(params)),
            "start_task": start_task,
            "triggered_by": triggered_by,
            "message_id": message_id,
            "topic": topic,
            "now": now,
            "trace_context": trace_context,
        },
    ).one()
    return _created(row)


def pipeline_tasks(conn: Connection, pipeline: str) -> list[str]:
    return list(conn.execute(query("pipeline_tasks"), {"pipeline": pipeline}).scalars())


def claim(
    conn: Connection,
    *,
    pipeline: str,
    batch_id: str,
    task: str,
    now: datetime,
    worker: str,
    map_index: int = -1,
) -> Claim | None:
    params = {"pipeline": pipeline, "batch_id": batch_id, "task": task, "now": now}
    params["map_index"] = map_index
    row = conn.execute(query("claim_task"), {**params, "worker": worker}).one_or_none()
    return _claim(row, batch_id)


@dataclass(frozen=True)
class Claimed:
    """What a claim did: claimed (``claim``), or QUEUED with ``ahead`` tasks before it."""

    claim: Claim | None
    ahead: int = 0


def claim_or_queue(
    conn: Connection,
    *,
    pipeline: str,
    batch_id: str,
    task: str,
    now: datetime,
    worker: str,
    map_index: int = -1,
) -> Claimed | None:
    """The claim of a task (or of one instance of a mapped task): lock-free without a pool or
    a max_active (claim_task); else under its pool's lock, queued when its slots are taken
    (claim_limited). None: not claimable."""
    params = {"pipeline": pipeline, "batch_id": batch_id, "task": task, "now": now}
    params["map_index"] = map_index
    row = conn.execute(query("claim_task"), {**params, "worker": worker}).one_or_none()
    if row is not None:
        return Claimed(_claim(row, batch_id))
    row = conn.execute(query("claim_limited"), {**params, "worker": worker}).one_or_none()
    if row is None:
        return None
    if row.claim_status != TaskStatus.PROCESSING:
        return Claimed(None, row.ahead)
    return Claimed(_claim(row, batch_id))


def release_slots(
    conn: Connection, *, log_id: int, topic: str, now: datetime
) -> list[OutgoingMessage]:
    """The run_task messages of the waiting tasks a limited attempt's end lets start."""
    params = {"log_id": log_id, "topic": topic, "now": now}
    rows = conn.execute(query("release_slots"), params).all()
    return [OutgoingMessage(r.topic, r.payload, r.attributes, r.outbox_id) for r in rows]


def _claim(row: Row[Any] | None, batch_id: str) -> Claim | None:
    if row is None:
        return None
    return Claim(
        ref=_ref(row, batch_id),
        handler=row.handler,
        params=row.params,
        batch_params=row.batch_params,
        parent_outputs=row.parent_outputs,
        lease_expires_at=row.lease_expires_at,
        job=row.job,
        item=getattr(row, "item", None),
        live=bool(getattr(row, "live", True)),
        version_id=getattr(row, "version_id", None),
    )


def task_state(
    conn: Connection, *, pipeline: str, batch_id: str, task: str, map_index: int = -1
) -> TaskState | None:
    params = {"pipeline": pipeline, "batch_id": batch_id, "task": task, "map_index": map_index}
    row = conn.execute(query("task_state"), params).one_or_none()
    if row is None:
        return None
    status = TaskStatus(row.status) if row.status is not None else None
    return TaskState(row.task_id, row.pipeline, status, row.attempt, row.batch_status)


@dataclass(frozen=True)
class Result:
    """How an attempt ended, as it is written to task_log."""

    status: TaskStatus  # SUCCESS, ERROR or RETRY; SKIPPED or CANCELLED (a sensor's end)
    output: Mapping[str, Any] | None = None
    error: str | None = None
    traceback: str | None = None
    next_attempt_at: datetime | None = None


def finish_attempt(
    conn: Connection,
    *,
    ref: AttemptRef,
    result: Result,
    topic: str,
    alerts_topic: str,
    now: datetime,
    lease_before: datetime | None = None,
) -> Created | None:
    """PROCESSING -> result.status for this attempt, with its retry message or its alert.
    None: the row had moved on (another attempt, a cancel) or, with ``lease_before``, its lease
    was renewed past it (a heartbeat): nothing was written."""
    row = conn.execute(
        query("finish_attempt"),
        {
            "log_id": ref.log_id,
            "attempt": ref.attempt,
            "task": ref.task,
            "status": result.status.value,
            "output": json.dumps(result.output) if result.output is not None else None,
            "error": stored_error_or_none(result.error),
            "traceback": stored_error_or_none(result.traceback, keep_end=True),
            "next_attempt_at": result.next_attempt_at,
            "topic": topic,
            "alerts_topic": alerts_topic,
            "now": now,
            "lease_before": lease_before,
        },
    ).one()
    created = _created(row)
    return created if created.tasks else None


def advance_children(
    conn: Connection,
    *,
    pipeline: str,
    batch_id: str,
    finished: Sequence[Transition],
    topic: str,
    now: datetime,
) -> Created:
    row = conn.execute(
        query("advance_children"),
        {
            "pipeline": pipeline,
            "batch_id": batch_id,
            "parent_ids": [t.task_id for t in finished],
            "outcomes": [t.outcome.value for t in finished],
            "root_causes": [t.root_cause_log_id or 0 for t in finished],
            "topic": topic,
            "now": now,
        },
    ).one()
    return _created(row)


def finish_batch(conn: Connection, *, pipeline: str, batch_id: str, now: datetime) -> str | None:
    """RUNNING -> SUCCESS/FAILED if nothing is open, CANCELLING -> CANCELLED if nothing runs;
    the new status, or None (not written)."""
    return conn.execute(
        query("finish_batch"), {"pipeline": pipeline, "batch_id": batch_id, "now": now}
    ).scalar_one_or_none()


def record_rejected_message(conn: Connection, rejection: Rejection, *, now: datetime) -> bool:
    """Store a rejected message; False if this message (same id, same data) is already stored."""
    return (
        conn.execute(query("record_rejected_message"), _message_row(rejection, now)).first()
        is not None
    )


def _message_row(rejection: Rejection, now: datetime) -> dict[str, Any]:
    return {
        "message_id": rejection.message_id,
        "attributes": json.dumps(rejection.attributes),
        "data": rejection.payload.data,
        "payload_bytes": rejection.payload.size,
        "payload_sha256": rejection.payload.sha256,
        "reason": rejection.reason,
        "now": now,
    }


def extend_lease(conn: Connection, ref: AttemptRef, now: datetime) -> datetime | None:
    """The new lease expiry, or None if the attempt is no longer live."""
    return conn.execute(
        query("extend_lease"), {"log_id": ref.log_id, "attempt": ref.attempt, "now": now}
    ).scalar_one_or_none()


def expired_leases(conn: Connection, *, now: datetime, limit: int) -> list[AttemptRef]:
    rows = conn.execute(query("expired_leases"), {"now": now, "limit": limit}).all()
    return [_ref(row) for row in rows]


def record_dead_letter(conn: Connection, letter: DeadLetter, *, now: datetime) -> bool:
    """Store a dead-lettered message once; False if it was already recorded."""
    params = {**_message_row(letter.rejection, now), **letter.row()}
    return conn.execute(query("record_dead_letter"), params).first() is not None


@dataclass(frozen=True)
class ScopeRow:
    task_id: int
    task: str
    pipeline: str
    log_id: int | None
    status: TaskStatus | None
    batch_status: BatchStatus


def rerun_scope(
    conn: Connection, *, pipeline: str, batch_id: str, tasks: Sequence[str], downstream: bool
) -> list[ScopeRow]:
    """The tasks and (optionally) their descendants in the batch's version, with their rows;
    [] if no such batch/task. Locks the batch row until the transaction ends."""
    rows = conn.execute(
        query("rerun_scope"),
        {
            "pipeline": pipeline,
            "batch_id": batch_id,
            "tasks": list(tasks),
            "downstream": downstream,
        },
    ).all()
    return [
        ScopeRow(
            r.task_id,
            r.name,
            r.pipeline,
            r.log_id,
            TaskStatus(r.status) if r.status else None,
            BatchStatus(r.batch_status),
        )
        for r in rows
    ]


def rerun_reset(conn: Connection, *, pipeline: str, batch_id: str, task_ids: Sequence[int]) -> int:
    """Remove the rows being rerun and recount their children's fan-in; rows removed."""
    params = {"pipeline": pipeline, "batch_id": batch_id, "task_ids": list(task_ids)}
    removed = len(conn.execute(query("rerun_remove_rows"), params).all())
    conn.execute(query("rerun_recount_fanin"), params)
    return removed


def rerun_start(
    conn: Connection,
    *,
    pipeline: str,
    batch_id: str,
    task_id: int,
    task: str,
    topic: str,
    now: datetime,
) -> Created | None:
    """The batch RUNNING again and the task's row (and message); None (nothing written) if the
    batch's status forbids a rerun (CANCELLING)."""
    row = conn.execute(
        query("rerun_start"),
        {
            "pipeline": pipeline,
            "batch_id": batch_id,
            "task_id": task_id,
            "task": task,
            "topic": topic,
            "now": now,
        },
    ).one()
    return _created(row) if row.resumed else None


def descendants(
    conn: Connection, *, pipeline: str, batch_id: str, task_ids: Sequence[int]
) -> set[int]:
    """Every task strictly below any of ``task_ids`` in the batch's version."""
    params = {"pipeline": pipeline, "batch_id": batch_id, "task_ids": list(task_ids)}
    rows = conn.execute(query("descendants"), params).scalars()
    return set(rows)


def deferred_attempt(
    conn: Connection,
    *,
    pipeline: str,
    batch_id: str,
    task: str,
    attempt: int,
    poll_at: str | None = None,
) -> Claim | None:
    """A deferred attempt with what its poll needs; None if it is not (or no longer) deferred,
    or, with ``poll_at``, if it has deferred again since that poll (a stale copy)."""
    params = {"pipeline": pipeline, "batch_id": batch_id, "task": task, "attempt": attempt}
    params["poll_at"] = poll_at
    row = conn.execute(query("deferred_attempt"), params).one_or_none()
    return _claim(row, batch_id)


def deferred_to_stop(
    conn: Connection, *, pipeline: str, batch_id: str
) -> list[tuple[str, int, str]]:
    """(task, attempt, handler) of each deferred attempt a cancelled batch stops."""
    params = {"pipeline": pipeline, "batch_id": batch_id}
    rows = conn.execute(query("deferred_to_stop"), params).all()
    return [(r.name, r.attempt, r.handler) for r in rows]


def defer_attempt(
    conn: Connection,
    *,
    ref: AttemptRef,
    job: Mapping[str, Any],
    poll_at: datetime,
    topic: str,
    now: datetime,
) -> Created | None:
    # Fenced by the poll it follows (ref.poll_at: None for a fresh attempt), so a repeat or a
    # concurrent poll cannot start a second chain of polls.
    """Keep the attempt PROCESSING with its job and a poll message held until ``poll_at``.
    None: the attempt is no longer live (nothing written)."""
    row = conn.execute(
        query("defer_attempt"),
        {
            "log_id": ref.log_id,
            "attempt": ref.attempt,
            "job": json.dumps(dict(job)),
            "poll_at": poll_at,
            "expected_poll_at": ref.poll_at,
            "topic": topic,
            "now": now,
        },
    ).one()
    created = _created(row)
    return created if created.tasks else None


def overdue_polls(
    conn: Connection, *, cutoff: datetime, limit: int
) -> list[tuple[int, str, str, str, int]]:
    """(log_id, pipeline, batch_id, task, attempt) of each deferred attempt whose poll is
    overdue."""
    rows = conn.execute(query("overdue_polls"), {"cutoff": cutoff, "limit": limit}).all()
    return [(r.log_id, r.pipeline, r.batch_id, r.name, r.attempt) for r in rows]
