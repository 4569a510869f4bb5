"""The schedules table through the named queries of ``schema/sql/schedules.sql``. Rows come back as
plain mappings; ``dagrelay.engine.schedules`` decides what they mean."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from dagrelay.bounds import stored_error
from dagrelay.store import queries
from dagrelay.store.queries import query

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from dagrelay.store.direct import Reader


def due(conn: Connection, *, now: datetime, limit: int) -> list[str]:
    return list(conn.execute(query("due_schedules"), {"now": now, "limit": limit}).scalars())


def row(conn: Connection, pipeline: str) -> Mapping[str, Any] | None:
    found = conn.execute(query("schedule_row"), {"pipeline": pipeline}).mappings().one_or_none()
    return dict(found) if found is not None else None


def rows(conn: Reader) -> list[dict[str, Any]]:
    return queries.rows(conn, "list_schedules")


def running_batches(conn: Connection, pipeline: str) -> int:
    return int(conn.execute(query("running_batches"), {"pipeline": pipeline}).scalar_one())


def advance(
    conn: Connection,
    *,
    pipeline: str,
    due: datetime | None,
    next_run_at: datetime,
    last_tick_at: datetime | None,
    last_batch_id: str | None,
    now: datetime,
) -> bool:
    """The checked write: True if this caller moved the schedule from ``due``."""
    params = {
        "pipeline": pipeline,
        "due": due,
        "next_run_at": next_run_at,
        "last_tick_at": last_tick_at,
        "last_batch_id": last_batch_id,
        "now": now,
    }
    return conn.execute(query("advance_schedule"), params).one_or_none() is not None


def record_error(
    conn: Connection, pipeline: str, error: str, *, due: datetime | None, never: bool = False
) -> bool:
    """Store why the schedule evaluated at ``due`` cannot start its tick (``never``: its cron
    never fires, so ``next_run_at`` becomes NULL). True if the row changed (a new error)."""
    params = {"pipeline": pipeline, "error": stored_error(error), "due": due, "never": never}
    return conn.execute(query("schedule_error"), params).one_or_none() is not None


def upsert(conn: Connection, values: Mapping[str, Any], now: datetime) -> str:
    """'created', 'updated' or 'unchanged'."""
    found = conn.execute(query("upsert_schedule"), {**values, "now": now}).one_or_none()
    if found is None:
        return "unchanged"
    return "created" if found.created else "updated"


def delete(conn: Connection, pipeline: str) -> bool:
    return conn.execute(query("delete_schedule"), {"pipeline": pipeline}).one_or_none() is not None


def set_paused(conn: Connection, pipeline: str, paused: bool, now: datetime) -> bool:
    """True if the schedule changed (False: no such schedule, or already so)."""
    name = "pause_schedule" if paused else "resume_schedule"
    return conn.execute(query(name), {"pipeline": pipeline, "now": now}).one_or_none() is not None
