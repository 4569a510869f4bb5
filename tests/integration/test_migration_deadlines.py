"""Migration 0020 (deadlines) on a database holding the 0019 schema and its data: every row is
kept, existing versions keep their hashes (a pipeline without deadlines pins the same version
after the upgrade), and the downgrade restores 0019's snapshot function exactly."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from dagrelay.store import migrate
from tests.migration_helpers import database_at, row_counts

pytestmark = pytest.mark.integration

BEFORE = "0019"
AFTER = "0020"
COUNTED = ("tasks", "batches", "task_log", "pipeline_versions", "version_tasks", "pipelines")

OLD_DATA = [
    "INSERT INTO pipelines (pipeline, description) VALUES ('sales', 'monthly sales')",
    """INSERT INTO tasks (name, pipeline, handler, params) VALUES
       ('load', 'sales', 'python.noop', '{}'), ('report', 'sales', 'python.noop', '{}')""",
    """INSERT INTO batches (pipeline, batch_id, status, version_id)
       VALUES ('sales', '2024-03', 'RUNNING', dagrelay_pipeline_version('sales', now()))""",
    """INSERT INTO task_log (pipeline, batch_id, task_id, status)
       SELECT 'sales', '2024-03', task_id, 'NEW' FROM tasks WHERE name = 'load'""",
]

PIN = "SELECT dagrelay_pipeline_version('sales', now())"
DEFINITION = (
    "SELECT pg_get_functiondef(p.oid) FROM pg_proc p WHERE p.proname = 'dagrelay_pipeline_version'"
)


@pytest.fixture
def old_db(empty_db_url: str) -> Iterator[Engine]:
    with database_at(empty_db_url, BEFORE, OLD_DATA) as engine:
        yield engine


def counts(db: Engine) -> dict[str, int]:
    return row_counts(db, COUNTED)


def one(db: Engine, sql: str) -> object:
    with db.begin() as conn:
        return conn.execute(text(sql)).scalar_one()


def test_upgrade_keeps_every_row_and_every_version(old_db: Engine) -> None:
    before = counts(old_db)
    version = one(old_db, PIN)
    old_function = one(old_db, DEFINITION)
    migrate.upgrade(old_db, AFTER)
    assert counts(old_db) == before
    assert one(old_db, PIN) == version  # no deadline: the same hash, the same version
    assert one(old_db, "SELECT description FROM pipelines") == "monthly sales"
    assert one(old_db, "SELECT count(*) FROM tasks WHERE deadline IS NOT NULL") == 0

    # A deadline makes a new version, which holds it.
    with old_db.begin() as conn:
        conn.execute(text("""UPDATE tasks SET deadline = '{"within_s": 60}' WHERE name = 'load'"""))
    assert one(old_db, PIN) != version
    assert one(old_db, "SELECT count(*) FROM version_tasks WHERE deadline IS NOT NULL") == 1

    with old_db.begin() as conn:
        conn.execute(text("""UPDATE tasks SET deadline = NULL"""))
        conn.execute(
            text(
                "INSERT INTO pipelines (pipeline, deadline) "
                """VALUES ('other', '{"within_s": 60, "after": "start"}')"""
            )
        )
    migrate.downgrade(old_db, BEFORE)
    assert one(old_db, DEFINITION) == old_function
    assert one(old_db, PIN) == version
    # A pipelines row kept only for its deadline goes; the described one stays.
    assert one(old_db, "SELECT string_agg(pipeline, ',') FROM pipelines") == "sales"
    assert counts(old_db)["task_log"] == before["task_log"]
