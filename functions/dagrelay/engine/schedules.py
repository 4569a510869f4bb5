"""Recurring schedules, evaluated by the sweep (every minute from Cloud Scheduler; a loop locally).

``decide`` is pure: given a schedule row, the time and how many of the pipeline's batches are
RUNNING, it says which due ticks start and where ``next_run_at`` goes:

- ``next_run_at`` NULL (a new row, or its cron or zone changed): set to the first tick after
  now; nothing starts.
- the due ticks are those from ``next_run_at`` to now: the *runs*. ``catchup: latest`` keeps
  only the newest (older missed ticks are dropped); ``catchup: all`` keeps every one, up to the
  newest ``catchup_limit`` (the cap: older ones are dropped, and said so).
- runs start oldest first while fewer than ``max_active_batches`` of the pipeline's batches are
  RUNNING (whoever started them). A run that finds no free slot waits — ``next_run_at`` stays
  on it, so no later tick is started before it and the next sweep tries again — except under
  ``overlap: skip`` with ``catchup: latest``: there the one due tick is dropped. With
  ``catchup: all`` no run is ever dropped by a full pipeline: catch-up means every missed run
  happens, one slot at a time (Airflow's catch-up under ``max_active_runs``).

``start_due_ticks`` is the sweep's step: per due schedule, one transaction starts the ticks'
batches (the engine's own start) and moves ``next_run_at`` with a checked write, so two sweeps
never start a tick twice and a lost sweep is caught up by the next one. A batch id that already
exists (the tick's batch was started by hand, or by ingestion) counts as started. Each schedule
is evaluated in a savepoint of its own: whatever one row does wrong (a cron that never fires, a
template whose batch id the database refuses, a pipeline without tasks) is stored in its
``last_error`` and the other schedules go on (ARCHITECTURE.md, blast radius of one).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection

from dagrelay.engine.core import Engine
from dagrelay.engine.ticks import Cron, NeverFires, Tick, batch_id
from dagrelay.errors import DagrelayError
from dagrelay.messages import StartBatch
from dagrelay.store import schedules as store
from dagrelay.store.db import error_text
from dagrelay.store.outbox import OutgoingMessage

log = logging.getLogger(__name__)

DUE_LIMIT = 100  # schedules per sweep; the rest are due at the next one
MAX_ERROR_CHARS = 2000  # schedules.last_error is cut to this


class Catchup(StrEnum):
    ALL = "all"  # every missed tick, up to catchup_limit (the newest ones)
    LATEST = "latest"  # only the newest missed tick


class Overlap(StrEnum):
    SKIP = "skip"  # a tick that finds max_active_batches running is dropped
    WAIT = "wait"  # it starts when a batch finishes


@dataclass(frozen=True)
class Schedule:
    pipeline: str
    cron: Cron
    batch_id_template: str
    catchup: Catchup = Catchup.LATEST
    catchup_limit: int = 10
    max_active_batches: int = 1
    overlap: Overlap = Overlap.SKIP
    paused: bool = False
    next_run_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Schedule:
        return cls(
            pipeline=row["pipeline"],
            cron=Cron(row["cron"], row["timezone"]),
            batch_id_template=row["batch_id_template"],
            catchup=Catchup(row["catchup"]),
            catchup_limit=row["catchup_limit"],
            max_active_batches=row["max_active_batches"],
            overlap=Overlap(row["overlap"]),
            paused=row["paused"],
            next_run_at=row["next_run_at"],
        )


@dataclass(frozen=True)
class Decision:
    start: tuple[Tick, ...]
    next_run_at: datetime
    dropped: tuple[Tick, ...] = ()  # due ticks that will never start (catchup latest, skip)
    waiting: tuple[Tick, ...] = ()  # due ticks waiting for a free slot, oldest first
    capped: bool = False  # older due ticks lay beyond catchup_limit: dropped


def decide(schedule: Schedule, now: datetime, running: int) -> Decision:
    cron = schedule.cron
    if schedule.next_run_at is None:
        return Decision((), cron.next_after(now))
    keep = schedule.catchup_limit if schedule.catchup == Catchup.ALL else 1
    due = cron.due(schedule.next_run_at, now, keep)
    capped = len(due) == keep and due[0].scheduled_for > schedule.next_run_at
    free = max(0, schedule.max_active_batches - running)
    start, rest = tuple(due[:free]), tuple(due[free:])
    if rest and (schedule.overlap == Overlap.WAIT or schedule.catchup == Catchup.ALL):
        return Decision(start, rest[0].scheduled_for, waiting=rest, capped=capped)
    return Decision(start, cron.next_after(now), dropped=rest, capped=capped)


def waiting_runs(schedule: Schedule, now: datetime) -> int:
    """How many runs of the schedule are due and not started at ``now`` (``schedule list``):
    the ticks from ``next_run_at`` to now, up to what catch-up keeps."""
    if schedule.next_run_at is None or schedule.next_run_at > now:
        return 0
    keep = schedule.catchup_limit if schedule.catchup == Catchup.ALL else 1
    return len(schedule.cron.due(schedule.next_run_at, now, keep))


# -- the sweep's step ----------------------------------------------------------------------------


def start_due_ticks(engine: Engine) -> int:
    """Start the batches of every due tick; returns how many batches were created. A schedule
    that cannot start its tick records why (``schedules.last_error``); the others go on."""
    with engine.db.begin() as conn:
        pipelines = store.due(conn, now=engine.clock(), limit=DUE_LIMIT)
    started = 0
    for pipeline in pipelines:
        try:
            started += _evaluate(engine, pipeline)
        except Exception:  # the error could not even be recorded (the database is down)
            log.exception("schedule %s: not evaluated", pipeline, extra=_extra(pipeline))
    return started


@dataclass
class _Started:
    decision: Decision
    created: list[str] = field(default_factory=list)
    messages: list[OutgoingMessage] = field(default_factory=list)
    idle: list[str] = field(default_factory=list)  # batches with nothing to run


def _evaluate(engine: Engine, pipeline: str) -> int:
    now = engine.clock()
    with engine.db.begin() as conn:
        row = store.row(conn, pipeline)
        if row is None or row["paused"]:
            return 0
        if row["next_run_at"] is not None and row["next_run_at"] > now:
            return 0  # another sweep advanced it since the list was read
        try:
            with conn.begin_nested():  # the savepoint one bad row rolls back
                started = _start(engine, conn, row, now)
        except Exception as exc:  # noqa: BLE001 - stored on the row; the other schedules go on
            _record_error(conn, pipeline, row["next_run_at"], exc)
            return 0
    if started is None:
        return 0  # another sweep moved it first: that sweep starts these ticks
    engine.publish(started.messages)
    for batch in started.idle:
        engine.finish_batch(pipeline, batch)
    _log(pipeline, started.decision, started.created)
    return len(started.created)


def _start(
    engine: Engine, conn: Connection, row: Mapping[str, Any], now: datetime
) -> _Started | None:
    """Decide, advance ``next_run_at`` (the checked write) and start the ticks' batches, in the
    caller's transaction. None if another sweep advanced the schedule first."""
    pipeline = row["pipeline"]
    schedule = Schedule.from_row(row)
    decision = decide(schedule, now, store.running_batches(conn, pipeline))
    ids = [batch_id(schedule.batch_id_template, tick) for tick in decision.start]
    last = decision.start[-1].scheduled_for if decision.start else None
    advanced = store.advance(
        conn,
        pipeline=pipeline,
        due=schedule.next_run_at,
        next_run_at=decision.next_run_at,
        last_tick_at=last,
        last_batch_id=ids[-1] if ids else None,
        now=now,
    )
    if not advanced:
        return None
    started = _Started(decision)
    for tick, batch in zip(decision.start, ids, strict=True):
        message = StartBatch(pipeline, batch, tick.params(), triggered_by=f"schedule:{pipeline}")
        created = engine.start_batch_in(conn, message, now)
        if created is not None:
            started.messages += created.messages
            started.created.append(batch)
            started.idle += [] if created.messages else [batch]
    return started


def _record_error(
    conn: Connection, pipeline: str, due: datetime | None, exc: BaseException
) -> None:
    """Store why the schedule cannot start its tick on its row; log it when it is new."""
    error = error_text(exc, MAX_ERROR_CHARS)
    never = isinstance(exc, NeverFires)
    if store.record_error(conn, pipeline, error, due=due, never=never):
        log.error(
            "schedule %s: %s%s",
            pipeline,
            error,
            " (next_run_at cleared until its cron or zone changes)" if never else "",
            extra=_extra(pipeline),
            exc_info=not isinstance(exc, DagrelayError),
        )
    else:
        log.debug("schedule %s: still %s", pipeline, error, extra=_extra(pipeline))


def _log(pipeline: str, decision: Decision, created: list[str]) -> None:
    extra = {**_extra(pipeline), "next_run_at": decision.next_run_at.isoformat()}
    if decision.start:
        log.info(
            "schedule %s: %d ticks due, batches started: %s",
            pipeline,
            len(decision.start),
            ", ".join(created) or "none (they existed)",
            extra=extra,
        )
    if decision.waiting:
        log.info(
            "schedule %s: %d runs wait for a free slot (max_active_batches)",
            pipeline,
            len(decision.waiting),
            extra=extra,
        )
    if decision.dropped:
        log.warning(
            "schedule %s: %d ticks dropped (max_active_batches reached, overlap: skip)",
            pipeline,
            len(decision.dropped),
            extra=extra,
        )
    if decision.capped:
        log.warning(
            "schedule %s: ticks older than the newest catchup_limit dropped",
            pipeline,
            extra=extra,
        )


def _extra(pipeline: str) -> dict[str, str]:
    return {"action": "schedule", "pipeline": pipeline}


def backfill_ticks(
    schedule: Schedule, first: date, last: date, limit: int
) -> list[tuple[str, Tick]]:
    """The ticks whose interval starts from ``first`` to ``last`` (the zone's days, both
    included), each with the batch id the schedule gives it: a backfill of a monthly schedule
    runs months, named as the schedule names them."""
    ticks = schedule.cron.ticks_starting(first, last, limit)
    return [(batch_id(schedule.batch_id_template, tick), tick) for tick in ticks]
