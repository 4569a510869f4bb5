"""Named pools: their rows, and the messages a changed slot count releases
(``schema/sql/pools.sql``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from dagrelay.store import queries
from dagrelay.store.queries import query

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from dagrelay.store.direct import Reader
    from dagrelay.store.outbox import OutgoingMessage


@dataclass(frozen=True)
class Pool:
    name: str
    slots: int
    description: str | None
    in_use: int = 0
    queued: int = 0


def set_pool(
    conn: Connection, *, name: str, slots: int, description: str | None, now: datetime
) -> Pool:
    params = {"name": name, "slots": slots, "description": description, "now": now}
    row = conn.execute(query("set_pool"), params).one()
    return Pool(row.name, row.slots, row.description)


def release_pool(
    conn: Connection, *, name: str, topic: str, now: datetime
) -> list[OutgoingMessage]:
    """The run_task messages of the queued tasks the pool's free slots now fit."""
    rows = conn.execute(query("release_pool"), {"name": name, "topic": topic, "now": now}).all()
    from dagrelay.store.outbox import OutgoingMessage  # noqa: PLC0415 - not for `pool list`

    return [OutgoingMessage(r.topic, r.payload, r.attributes, r.outbox_id) for r in rows]


def pools(conn: Reader) -> list[Pool]:
    rows = queries.rows(conn, "pool_rows")
    return [Pool(r["name"], r["slots"], r["description"], r["in_use"], r["queued"]) for r in rows]
