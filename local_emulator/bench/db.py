"""Benchmark helpers: throwaway databases, set-based pipeline shapes, small statistics.

Every benchmark gets a database of its own, created from scratch (``CREATE DATABASE`` through an
admin connection to the ``postgres`` database, then ``dagrelay.store.migrate.upgrade``) and
dropped at the end. Pipelines are inserted with plain SQL, one ``INSERT ... SELECT
generate_series`` for the tasks and one for the edges, as a user with thousands of tasks would.
"""

from __future__ import annotations

import math
import os
import statistics
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, make_url, text

from dagrelay.local.stack import DEFAULT_DATABASE_URL
from dagrelay.store import migrate

SERVER_URL_ENV = "DAGRELAY_BENCH_DATABASE_URL"  # any database on the server to benchmark on


def server_url() -> str:
    return os.environ.get(SERVER_URL_ENV) or os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL


def _admin() -> Engine:
    admin_url = make_url(server_url()).set(database="postgres")
    return create_engine(admin_url, isolation_level="AUTOCOMMIT", pool_size=1)


@contextmanager
def throwaway_database(purpose: str) -> Iterator[str]:
    """A new, migrated database (its URL); dropped on exit, whatever happened."""
    name = f"dagrelay_bench_{purpose}_{uuid.uuid4().hex[:8]}"
    url = make_url(server_url()).set(database=name).render_as_string(hide_password=False)
    admin = _admin()
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            engine = create_engine(url, pool_size=1)
            try:
                migrate.upgrade(engine)
            finally:
                engine.dispose()
            yield url
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


# -- pipeline shapes -------------------------------------------------------------------------
# Tasks are numbered 1..n and named "<pipeline>-00001"; a shape is SQL yielding (child, parent)
# task numbers, expanded from generate_series inside the one INSERT of the edges.

NAME_SQL = "CAST(:pipeline AS text) || '-' || lpad(CAST({n} AS text), 5, '0')"


def task_name(pipeline: str, n: int) -> str:
    return f"{pipeline}-{n:05d}"


CHAIN = "SELECT g, g - 1 FROM generate_series(2, :n) g"
FAN_IN = "SELECT :n, g FROM generate_series(1, :n - 1) g"  # task n has parents 1..n-1
FAN_OUT = "SELECT g, 1 FROM generate_series(2, :n) g"  # task 1 has children 2..n
WIDE = (  # 1 -> 2..n-1 -> n
    "SELECT g, 1 FROM generate_series(2, :n - 1) g "
    "UNION ALL SELECT :n, g FROM generate_series(2, :n - 1) g"
)
INDEPENDENT = None


def insert_pipeline(
    db: Engine, pipeline: str, n: int, edges: str | None, *, guard: bool = True
) -> dict[int, int]:
    """Tasks 1..n (python.noop) and the shape's edges; returns {task number: task_id}.
    guard=False skips the dependency guard trigger (and the foreign keys) for the edges, with
    ``session_replication_role = replica`` for this transaction: needs a superuser."""
    with db.begin() as conn:
        rows = conn.execute(
            text(
                "INSERT INTO tasks (name, pipeline, handler) "
                f"SELECT {NAME_SQL.format(n='g')}, :pipeline, 'python.noop' "
                "FROM generate_series(1, :n) g RETURNING task_id, name"
            ),
            {"pipeline": pipeline, "n": n},
        ).all()
        if edges is not None:
            if not guard:
                conn.execute(text("SET LOCAL session_replication_role = replica"))
            conn.execute(
                text(
                    "INSERT INTO task_dependencies (child_task_id, parent_task_id) "
                    f"SELECT c.task_id, p.task_id FROM ({edges}) AS e(child, parent) "
                    f"JOIN tasks c ON c.name = {NAME_SQL.format(n='e.child')} "
                    f"JOIN tasks p ON p.name = {NAME_SQL.format(n='e.parent')}"
                ),
                {"pipeline": pipeline, "n": n},
            )
    return {int(name.rsplit("-", 1)[1]): task_id for task_id, name in rows}


def scalar(db: Engine, sql: str, **params: Any) -> Any:
    with db.connect() as conn:
        return conn.execute(text(sql), params).scalar_one()


def batch_state(db: Engine, pipeline: str, batch_id: str) -> tuple[str, float | None] | None:
    """(status, finished_at - created_at in seconds) of a batch, None if it does not exist."""
    with db.connect() as conn:
        row = conn.execute(
            text(
                "SELECT status::text, EXTRACT(EPOCH FROM finished_at - created_at) FROM batches "
                "WHERE pipeline = :p AND batch_id = :b"
            ),
            {"p": pipeline, "b": batch_id},
        ).one_or_none()
    if row is None:
        return None
    return str(row[0]), None if row[1] is None else float(row[1])


# -- statistics ------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return float(ordered[rank - 1])


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)
