"""Assets through the named queries of ``schema/sql/assets.sql``: the events a completion
writes, the asset schedules they lock and fire, and the reads of ``dagrelay assets`` and the
dashboard. ``dagrelay.engine.assets`` decides; ``dagrelay.engine.asset_rules`` holds the rules."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from dagrelay.bounds import stored_error
from dagrelay.store import queries
from dagrelay.store.queries import query

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from dagrelay.store.direct import Reader


def record_events(
    conn: Connection, *, pipeline: str, batch_id: str, task_ids: Sequence[int], now: datetime
) -> list[str]:
    """Write the events of these successful tasks; the asset schedules waiting for one of
    their assets, locked until the caller commits."""
    params = {"pipeline": pipeline, "batch_id": batch_id, "task_ids": list(task_ids), "now": now}
    return list(conn.execute(query("record_asset_events"), params).scalars())


def schedule_state(conn: Connection, pipeline: str) -> Mapping[str, Any] | None:
    row = conn.execute(query("asset_schedule_state"), {"pipeline": pipeline})
    found = row.mappings().one_or_none()
    return dict(found) if found is not None else None


def pending_events(conn: Connection, pipeline: str) -> list[dict[str, Any]]:
    rows = conn.execute(query("asset_pending_events"), {"pipeline": pipeline}).mappings()
    return [dict(r) for r in rows]


def fire(
    conn: Connection,
    *,
    pipeline: str,
    run: int,
    batch_id: str,
    event_ids: Sequence[int],
    now: datetime,
) -> int:
    """The schedule's run ``run`` (its batch ``batch_id``) consumes ``event_ids``: how many
    it consumed; 0 if the checked write found the schedule moved on."""
    params = {
        "pipeline": pipeline,
        "run": run,
        "batch_id": batch_id,
        "event_ids": list(event_ids),
        "now": now,
    }
    return int(conn.execute(query("fire_asset_schedule"), params).scalar_one())


def record_error(conn: Connection, pipeline: str, error: str) -> bool:
    params = {"pipeline": pipeline, "error": stored_error(error)}
    return conn.execute(query("asset_schedule_error"), params).one_or_none() is not None


def upsert(conn: Connection, values: Mapping[str, Any], now: datetime) -> str:
    """'created', 'updated' or 'unchanged'."""
    found = conn.execute(query("upsert_asset_schedule"), {**values, "now": now}).one_or_none()
    if found is None:
        return "unchanged"
    return "created" if found.created else "updated"


def delete(conn: Connection, pipeline: str) -> bool:
    params = {"pipeline": pipeline}
    return conn.execute(query("delete_asset_schedule"), params).one_or_none() is not None


def row(conn: Connection, pipeline: str) -> Mapping[str, Any] | None:
    found = conn.execute(query("asset_schedule_row"), {"pipeline": pipeline})
    one = found.mappings().one_or_none()
    return dict(one) if one is not None else None


def set_paused(conn: Connection, pipeline: str, paused: bool, now: datetime) -> bool:
    params = {"pipeline": pipeline, "paused": paused, "now": now}
    return conn.execute(query("pause_asset_schedule"), params).one_or_none() is not None


# -- reads ---------------------------------------------------------------------------------------


def assets(conn: Reader) -> list[dict[str, Any]]:
    """Every asset: producers, consumers, events, last update (``asset_list``)."""
    return queries.rows(conn, "asset_list")


def schedules(conn: Reader) -> list[dict[str, Any]]:
    """Every asset schedule with the assets it has pending (``asset_schedule_list``)."""
    return queries.rows(conn, "asset_schedule_list")


def batch_triggers(conn: Reader, pipeline: str, batch_id: str) -> list[dict[str, Any]]:
    """The events that started an asset-triggered batch."""
    return queries.rows(conn, "asset_batch_triggers", {"pipeline": pipeline, "batch_id": batch_id})
