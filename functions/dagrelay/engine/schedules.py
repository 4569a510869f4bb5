"""Recurring schedules, evaluated by the sweep (every minute from Cloud Scheduler; a loop locally).

``decide`` is pure: given a schedule row, the time and how many of the pipeline's batches are
RUNNING, it says which due ticks start and where ``next_run_at`` goes:

- ``next_run_at`` NULL (a new row, or its cron or zone changed): set to the first tick after
  now; nothing starts.
- the due ticks are those from ``next_run_at`` to now. ``catchup: latest`` keeps only the
  newest; ``catchup: all`` keeps the newest ``catchup_limit`` (older ones are dropped).
- at most ``max_active_batches`` of the pipeline's batches RUNNING (whoever started them): the
  ticks that find no free slot are dropped (``overlap: skip``) or stay due until a batch
  finishes (``overlap: wait``: ``next_run_at`` stays on the first of them).

``start_due_ticks`` is the sweep's step: per due schedule, one transaction starts the ticks'
batches (the engine's own start) and moves ``next_run_at`` with a checked write, so two sweeps
never start a tick twice and a lost sweep is caught up by the next one. A batch id that already
exists (the tick's batch was started by hand, or by ingestion) counts as started.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from dagrelay.engine.core import Engine
from dagrelay.engine.ticks import Cron, Tick, batch_id
from dagrelay.errors import DagrelayError
from dagrelay.messages import StartBatch
from dagrelay.store import schedules as store
from dagrelay.store.outbox import OutgoingMessage

log = logging.getLogger(__name__)

DUE_LIMIT = 100  # schedules per sweep; the rest are due at the next one


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
    dropped: tuple[Tick, ...] = ()  # due ticks that will never start (overlap: skip)


def decide(schedule: Schedule, now: datetime, running: int) -> Decision:
    cron = schedule.cron
    if schedule.next_run_at is None:
        return Decision((), cron.next_after(now))
    keep = schedule.catchup_limit if schedule.catchup == Catchup.ALL else 1
    due = cron.due(schedule.next_run_at, now, keep)
    free = max(0, schedule.max_active_batches - running)
    start, rest = tuple(due[:free]), tuple(due[free:])
    if rest and schedule.overlap == Overlap.WAIT:
        return Decision(start, rest[0].scheduled_for)
    return Decision(start, cron.next_after(now), rest)


# -- the sweep's step ----------------------------------------------------------------------------


def start_due_ticks(engine: Engine) -> int:
    """Start the batches of every due tick; returns how many batches were created. A schedule
    that cannot start its tick keeps it due and records why (``schedules.last_error``)."""
    with engine.db.begin() as conn:
        pipelines = store.due(conn, now=engine.clock(), limit=DUE_LIMIT)
    started = 0
    for pipeline in pipelines:
        try:
            started += _evaluate(engine, pipeline)
        except DagrelayError as exc:  # a bad template, a pipeline without tasks
            log.error("schedule %s: %s", pipeline, exc, extra=_extra(pipeline))  # noqa: TRY400
            with engine.db.begin() as conn:
                store.record_error(conn, pipeline, str(exc))
    return started


def _evaluate(engine: Engine, pipeline: str) -> int:
    now = engine.clock()
    messages: list[OutgoingMessage] = []
    created: list[str] = []
    idle: list[str] = []  # batches with nothing to run (every root disabled)
    with engine.db.begin() as conn:
        row = store.row(conn, pipeline)
        if row is None or row["paused"]:
            return 0
        schedule = Schedule.from_row(row)
        if schedule.next_run_at is not None and schedule.next_run_at > now:
            return 0  # another sweep advanced it since the list was read
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
            return 0  # another sweep moved it first: that sweep starts these ticks
        for tick, batch in zip(decision.start, ids, strict=True):
            message = StartBatch(
                pipeline, batch, tick.params(), triggered_by=f"schedule:{pipeline}"
            )
            started = engine.start_batch_in(conn, message, now)
            if started is not None:
                messages += started.messages
                created.append(batch)
                idle += [] if started.messages else [batch]
    engine.publish(messages)
    for batch in idle:
        engine.finish_batch(pipeline, batch)
    _log(pipeline, decision, created)
    return len(created)


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
    if decision.dropped:
        log.warning(
            "schedule %s: %d ticks dropped (max_active_batches reached, overlap: skip)",
            pipeline,
            len(decision.dropped),
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
