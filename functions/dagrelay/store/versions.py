"""Reading pipeline versions (schema/sql/versions.sql) as plain rows (``dagrelay.engine.versions``
makes them into definitions), and the two writes that move a batch to another version."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from dagrelay.store.queries import query


@dataclass(frozen=True)
class BatchVersion:
    version_id: int
    version: int
    start_task_id: int | None


def current_version(conn: Connection, *, pipeline: str, now: datetime) -> int | None:
    """The live definition's version (stored if new); None if the pipeline has no tasks."""
    params = {"pipeline": pipeline, "now": now}
    return conn.execute(query("current_version"), params).scalar_one_or_none()


def batch_version(conn: Connection, *, pipeline: str, batch_id: str) -> BatchVersion | None:
    params = {"pipeline": pipeline, "batch_id": batch_id}
    row = conn.execute(query("batch_version"), params).one_or_none()
    return BatchVersion(row.version_id, row.version, row.start_task_id) if row else None


def batch_task_ids(conn: Connection, *, pipeline: str, batch_id: str) -> set[int]:
    params = {"pipeline": pipeline, "batch_id": batch_id}
    return set(conn.execute(query("batch_task_ids"), params).scalars())


def header(
    conn: Connection, *, version_id: int | None = None, pipeline: str = "", version: int = 0
) -> dict[str, Any] | None:
    """A version's row, by id or by (pipeline, number)."""
    params = {"version_id": version_id, "pipeline": pipeline, "version": version}
    row = conn.execute(query("version_header"), params).mappings().one_or_none()
    return dict(row) if row is not None else None


def definition_rows(
    conn: Connection, version_id: int
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """A version's tasks (every setting) and its edges as (parent, child) names."""
    params = {"version_id": version_id}
    tasks = conn.execute(query("version_definition_tasks"), params).mappings().all()
    edges = conn.execute(query("version_definition_edges"), params).all()
    return [dict(t) for t in tasks], [(e.parent, e.child) for e in edges]


def history(conn: Connection, pipeline: str) -> list[dict[str, Any]]:
    rows = conn.execute(query("pipeline_history"), {"pipeline": pipeline}).mappings()
    return [dict(r) for r in rows]


def batch_pipelines(conn: Connection, batch_id: str) -> list[str]:
    return list(conn.execute(query("batch_pipelines"), {"batch_id": batch_id}).scalars())


def move_batch(conn: Connection, *, pipeline: str, batch_id: str, version_id: int) -> int:
    """Pin the batch to ``version_id`` and rebuild its fan-in counters; rows dropped."""
    params = {"pipeline": pipeline, "batch_id": batch_id, "version_id": version_id}
    dropped = conn.execute(query("move_batch_version"), params).one().dropped
    conn.execute(query("rebuild_batch_fanin"), {"pipeline": pipeline, "batch_id": batch_id})
    return int(dropped)
