"""Asset events and asset schedules in the engine (ARCHITECTURE.md, "Assets").

``on_success`` runs in the transaction of a completion whose tasks ended SUCCESS: it writes an
event per asset they update and, for each asset schedule waiting for one of them (its row locked
by the same statement, in one order), starts what the pending events complete: the schedule's
run counter moves by a checked write, the events are consumed (``asset_triggers``: an event at
most once per schedule) and the batch's start_batch goes to the outbox — all in that one
transaction, so a duplicate delivery (whose write is fenced) writes nothing, and of two
upstream completions at the same instant exactly one sees both events. Each schedule is decided
under a savepoint: one that fails records its error and the completion goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from dagrelay.engine import asset_rules as rules
from dagrelay.store import assets as store
from dagrelay.store.outbox import OutgoingMessage

log = logging.getLogger(__name__)


def on_success(
    conn: Connection,
    *,
    pipeline: str,
    batch_id: str,
    task_ids: Sequence[int],
    topic: str,
    now: datetime,
) -> list[OutgoingMessage]:
    """The events of ``task_ids`` (SUCCESS) and the start_batch messages they complete."""
    waiting = store.record_events(
        conn, pipeline=pipeline, batch_id=batch_id, task_ids=task_ids, now=now
    )
    sent: list[OutgoingMessage] = []
    for downstream in waiting:
        sent += _decide(conn, downstream, topic, now)
    return sent


def _decide(conn: Connection, pipeline: str, topic: str, now: datetime) -> list[OutgoingMessage]:
    extra = {"action": "asset_schedule", "pipeline": pipeline}
    try:
        with conn.begin_nested():
            return _fire(conn, pipeline, topic, now)
    except (DBAPIError, rules.AssetError) as exc:
        log.error("asset schedule failed: %s", exc, extra=extra)  # noqa: TRY400 - recorded on its row
        with conn.begin_nested():
            store.record_error(conn, pipeline, str(exc))
        return []


def _fire(conn: Connection, pipeline: str, topic: str, now: datetime) -> list[OutgoingMessage]:
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
        ids = [e.event_id for e in firing.events]
        consumed, messages = store.fire(
            conn,
            pipeline=pipeline,
            run=firing.run,
            batch_id=firing.batch_id,
            event_ids=ids,
            payload=firing.message,
            topic=topic,
            now=now,
        )
        if consumed != len(ids) or not messages:  # cannot happen under the row lock
            raise rules.AssetError(f"run {firing.run}: the schedule or its events moved on")
        sent += messages
        log.info(
            "asset schedule starts batch %s",
            firing.batch_id,
            extra={"action": "asset_schedule", "pipeline": pipeline, "batch_id": firing.batch_id},
        )
    if problems:
        store.record_error(conn, pipeline, "; ".join(problems))
    return sent
