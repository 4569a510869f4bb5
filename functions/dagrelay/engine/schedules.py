"""Recurring schedules, evaluated by the sweep (every minute from Cloud Scheduler; a loop locally).

Which due ticks start is decided by the pure rules of ``dagrelay.engine.schedule_rules``
(``decide``, re-exported here).

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
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from dagrelay.engine.core import Engine
from dagrelay.engine.schedule_rules import (
    Catchup,
    Decision,
    Overlap,
    Schedule,
    backfill_ticks,
    decide,
    waiting_runs,
)
from dagrelay.engine.ticks import NeverFires, batch_id
from dagrelay.errors import DagrelayError
from dagrelay.messages import StartBatch
from dagrelay.store import schedules as store
from dagrelay.store.db import error_text
from dagrelay.store.outbox import OutgoingMessage

__all__ = [
    "Catchup",
    "Decision",
    "Overlap",
    "Schedule",
    "backfill_ticks",
    "decide",
    "start_due_ticks",
    "waiting_runs",
]

log = logging.getLogger(__name__)

DUE_LIMIT = 100  # schedules per sweep; the rest are due at the next one
MAX_ERROR_CHARS = 2000  # schedules.last_error is cut to this


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
