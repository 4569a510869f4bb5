"""Asset events and asset schedules in the engine (ARCHITECTURE.md, "Assets").

``on_success`` runs in the transaction of a completion whose task updates assets and ended
SUCCESS: it writes an event per asset and, for each asset schedule waiting for one of them (its
row locked by the same statement, in one order), starts what the pending events complete — the
downstream batch is created (``Engine.start_batch_in``, as a schedule tick does), the
schedule's run counter moves by a checked write and the events are consumed
(``asset_triggers``: an event at most once per schedule), all in that one transaction. So a
duplicate delivery (whose write is fenced) writes nothing, no message can be lost between the
upstream's success and the downstream's start, and of two upstream completions at the same
instant exactly one sees both events. Each schedule is decided under a savepoint: one that
fails records its error on its row, keeps its events pending, and the completion goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from dagrelay.engine import asset_rules as rules
from dagrelay.errors import BadMessage
from dagrelay.messages import StartBatch
from dagrelay.store import assets as store
from dagrelay.store.outbox import OutgoingMessage
from dagrelay.store.transitions import Created

log = logging.getLogger(__name__)

# Creates a batch in the caller's transaction (Engine.start_batch_in); None: it exists.
Starter = Callable[[Connection, StartBatch, datetime], Created | None]


def on_success(
    conn: Connection,
    *,
    pipeline: str,
    batch_id: str,
    task_ids: Sequence[int],
    start: Starter,
    now: datetime,
) -> list[OutgoingMessage]:
    """The events of ``task_ids`` (SUCCESS) and the messages of the batches they start."""
    waiting = store.record_events(
        conn, pipeline=pipeline, batch_id=batch_id, task_ids=task_ids, now=now
    )
    sent: list[OutgoingMessage] = []
    for downstream in waiting:
        sent += _decide(conn, downstream, start, now)
    return sent


def _decide(
    conn: Connection, pipeline: str, start: Starter, now: datetime
) -> list[OutgoingMessage]:
    try:
        with conn.begin_nested():
            return _fire(conn, pipeline, start, now)
    except (DBAPIError, BadMessage, rules.AssetError) as exc:
        reason = exc.reason if isinstance(exc, BadMessage) else str(exc)
        extra = {"action": "asset_schedule", "pipeline": pipeline}
        log.error("asset schedule failed: %s", reason, extra=extra)  # noqa: TRY400 - recorded on its row
        with conn.begin_nested():
            store.record_error(conn, pipeline, reason)
        return []


def _fire(conn: Connection, pipeline: str, start: Starter, now: datetime) -> list[OutgoingMessage]:
    state = store.schedule_state(conn, pipeline)
    if state is None or state["paused"]:
        return []
    schedule = rules.Waiting(
        pipeline, tuple(state["assets"]), state["batch_id_template"], int(state["runs"])
    )
    pending = [
        rules.Event(
            r["event_id"], r["asset"], r["pipeline"], r["batch_id"], r["task"], r["partition_key"]
        )
        for r in store.pending_events(conn, pipeline)
    ]
    firings, problems = rules.decide(schedule, pending)
    sent: list[OutgoingMessage] = []
    for firing in firings:
        message = firing.message
        created = start(
            conn,
            StartBatch(
                pipeline,
                firing.batch_id,
                params=message["params"],
                triggered_by=message["triggered_by"],
            ),
            now,
        )
        ids = [e.event_id for e in firing.events]
        consumed = store.fire(
            conn, pipeline=pipeline, run=firing.run, batch_id=firing.batch_id, event_ids=ids,
            now=now,
        )  # fmt: skip
        if consumed != len(ids):  # cannot happen under the row lock
            raise rules.AssetError(f"run {firing.run}: the schedule or its events moved on")
        extra = {"action": "asset_schedule", "pipeline": pipeline, "batch_id": firing.batch_id}
        if created is None:
            log.warning("asset schedule: batch %s exists already", firing.batch_id, extra=extra)
        else:
            log.info("asset schedule started batch %s", firing.batch_id, extra=extra)
            sent += created.messages
    if problems:
        store.record_error(conn, pipeline, "; ".join(problems))
    return sent
