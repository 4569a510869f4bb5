"""The dashboard's reads: named queries of ``schema/dashboard.sql``, rows as plain dicts.
Every request reads in one READ ONLY transaction (``read_only``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine

from dagrelay.store.queries import query

Row = dict[str, Any]


@contextmanager
def read_only(engine: Engine) -> Iterator[Connection]:
    """A connection whose transaction the database refuses to write in; rolled back at the end."""
    with engine.connect() as conn, conn.begin() as transaction:
        conn.execute(query("dashboard_read_only"))
        yield conn
        transaction.rollback()


def _rows(conn: Connection, name: str, **params: Any) -> list[Row]:
    return [dict(r) for r in conn.execute(query(name), params).mappings()]


def batches(conn: Connection, pipeline: str | None, limit: int) -> list[Row]:
    return _rows(conn, "dashboard_batches", pipeline=pipeline, limit=limit)


def batch(conn: Connection, pipeline: str, batch_id: str) -> Row | None:
    found = _rows(conn, "dashboard_batch", pipeline=pipeline, batch_id=batch_id)
    return found[0] if found else None


def batch_tasks(conn: Connection, pipeline: str, batch_id: str) -> list[Row]:
    return _rows(conn, "dashboard_batch_tasks", pipeline=pipeline, batch_id=batch_id)


def batch_attempts(conn: Connection, pipeline: str, batch_id: str) -> list[Row]:
    return _rows(conn, "dashboard_batch_attempts", pipeline=pipeline, batch_id=batch_id)


def batch_dead_letters(conn: Connection, pipeline: str, batch_id: str) -> list[Row]:
    return _rows(conn, "dashboard_batch_dead_letters", pipeline=pipeline, batch_id=batch_id)


def edges(conn: Connection, pipeline: str) -> list[Row]:
    return _rows(conn, "dashboard_pipeline_edges", pipeline=pipeline)


def pipeline_tasks(conn: Connection, pipeline: str) -> list[Row]:
    return _rows(conn, "dashboard_pipeline_tasks", pipeline=pipeline)


def pipelines(conn: Connection) -> list[str]:
    return [r["pipeline"] for r in _rows(conn, "dashboard_pipelines")]
