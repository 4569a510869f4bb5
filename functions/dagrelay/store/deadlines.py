"""Deadlines' rows (schema/sql/deadlines.sql; ARCHITECTURE.md, "Deadlines"): the misses the
sweeper records with their one alert, and the task failures they call for. A batch's deadlines
as ``status``, ``explain`` and the dashboard show them are in the read model
(``dagrelay.store.reads``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from dagrelay.bounds import stored_error
from dagrelay.retry_policy import RetryPolicy
from dagrelay.states import BatchStatus, TaskStatus
from dagrelay.store.outbox import OutgoingMessage
from dagrelay.store.queries import query
from dagrelay.store.transitions import AttemptRef, Created, _created

if TYPE_CHECKING:
    from sqlalchemy import Connection

# A batch (and its tasks) is checked while it runs and for this long after it finished: a
# deadline passed between two sweeps by something that then ended is still seen.
WINDOW_S = 3600


@dataclass(frozen=True)
class Miss:
    pipeline: str
    batch_id: str
    task: str  # '' for the batch's own deadline
    deadline_at: datetime
    ended_at: datetime | None  # None: still open when noticed
    fail: bool

    @property
    def what(self) -> str:
        return f"batch {self.pipeline}/{self.batch_id}" + (
            f" task {self.task}" if self.task else ""
        )


@dataclass(frozen=True)
class Recorded:
    misses: list[Miss]
    messages: list[OutgoingMessage]


def record_misses(
    conn: Connection, *, alerts_topic: str, now: datetime, window_s: int = WINDOW_S
) -> Recorded:
    """Every deadline missed and not yet recorded: recorded, each with its one alert."""
    row = conn.execute(
        query("record_deadline_misses"),
        {"alerts_topic": alerts_topic, "now": now, "window_s": window_s},
    ).one()
    misses = [
        Miss(
            m["pipeline"],
            m["batch_id"],
            m["task"],
            _time(m["deadline_at"]),
            _time(m["ended_at"]) if m["ended_at"] else None,
            m["fail"],
        )
        for m in row.misses
    ]
    return Recorded(misses, [OutgoingMessage.from_json(m) for m in row.messages])


@dataclass(frozen=True)
class Failing:
    """A missed deadline whose task must end ERROR, as taken (once) by the sweeper."""

    miss: str  # what missed its deadline, for the error
    deadline_at: datetime
    status: TaskStatus | None  # the task's row, None if it has none
    batch_running: bool
    mapped: bool
    ref: AttemptRef | None  # the task's row as an attempt (its current one)

    @property
    def error(self) -> str:
        return (
            f"DeadlineMissed: {self.miss} was to finish by {self.deadline_at.isoformat()}; "
            "its deadline says fail"
        )


def take_failure(conn: Connection, *, now: datetime) -> Failing | None:
    """The next missed deadline whose task must fail, taken once; None when there is none."""
    row = conn.execute(query("take_deadline_failure"), {"now": now}).one_or_none()
    if row is None:
        return None
    ref = None
    if row.log_id is not None:
        ref = AttemptRef(
            log_id=row.log_id,
            attempt=row.attempt,
            pipeline=row.pipeline,
            batch_id=row.batch_id,
            task_id=row.task_id,
            task=row.name,
            timeout_s=row.timeout_s,
            policy=RetryPolicy(
                max_retries=row.max_retries,
                delay_s=row.retry_delay_s,
                backoff=row.retry_backoff,
                max_delay_s=row.retry_max_delay_s,
            ),
            limited=row.limited,
        )
    return Failing(
        miss=f"task {row.task} of batch {row.pipeline}/{row.batch_id}",
        deadline_at=row.deadline_at,
        status=TaskStatus(row.status) if row.status else None,
        batch_running=row.batch_status == BatchStatus.RUNNING,
        mapped=row.mapped,
        ref=ref,
    )


def fail_waiting(
    conn: Connection, *, ref: AttemptRef, error: str, alerts_topic: str, now: datetime
) -> Created | None:
    """A task waiting to run ends ERROR with its alert; None if it no longer waits."""
    row = conn.execute(
        query("fail_waiting_task"),
        {
            "pipeline": ref.pipeline,
            "batch_id": ref.batch_id,
            "log_id": ref.log_id,
            "task": ref.task,
            "error": stored_error(error),
            "alerts_topic": alerts_topic,
            "now": now,
        },
    ).one()
    created = _created(row)
    return created if created.tasks else None


def _time(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)
