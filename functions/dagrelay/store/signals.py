"""Signals and waking the attempts that wait: the named queries of schema/sql/signals.sql
(ARCHITECTURE.md, "Sensors"). The engine (``dagrelay.engine.signals``, ``Engine.cancel_batch``)
decides; these run in its transaction."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from dagrelay.store.outbox import OutgoingMessage
from dagrelay.store.queries import query


def record(
    conn: Connection,
    *,
    key: str,
    payload: Mapping[str, Any],
    dedupe_id: str | None,
    triggered_by: str | None,
    now: datetime,
) -> int | None:
    """The new signal's id; None if a signal with ``dedupe_id`` is recorded already."""
    params = {
        "key": key,
        "payload": json.dumps(dict(payload)),
        "dedupe_id": dedupe_id,
        "triggered_by": triggered_by,
        "now": now,
    }
    return conn.execute(query("record_signal"), params).scalar_one_or_none()


def wake_signal_waiters(
    conn: Connection, *, key: str, topic: str, now: datetime
) -> list[OutgoingMessage]:
    """A poll now for each attempt waiting for the signal ``key``."""
    rows = conn.execute(query("wake_signal_waiters"), {"key": key, "topic": topic, "now": now})
    return [
        OutgoingMessage(r.topic, r.payload, r.attributes, r.outbox_id, r.available_at) for r in rows
    ]


def wake_batch_waiters(
    conn: Connection, *, pipeline: str, batch_id: str, topic: str, now: datetime
) -> list[OutgoingMessage]:
    """A poll now for each waiting attempt of the batch (its cancel ends them at that poll)."""
    params = {"pipeline": pipeline, "batch_id": batch_id, "topic": topic, "now": now}
    rows = conn.execute(query("wake_batch_waiters"), params)
    return [
        OutgoingMessage(r.topic, r.payload, r.attributes, r.outbox_id, r.available_at) for r in rows
    ]


def _messages(rows: Any) -> list[OutgoingMessage]:
    return [
        OutgoingMessage(r.topic, r.payload, r.attributes, r.outbox_id, r.available_at) for r in rows
    ]
