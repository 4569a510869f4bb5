"""Migration 0019 (assets) on a database holding the 0018 schema and its data: every row is
kept, every task updates nothing, existing versions keep their hashes (the snapshot hashes
``updates`` only when a task has some), and a task given assets makes a new version holding
them; the downgrade keeps the rows and restores 0018's snapshot function exactly."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from dagrelay.store import migrate
from tests.migration_helpers import database_at, row_counts

pytestmark = pytest.mark.integration

BEFORE = "0018"
AFTER = "0019"
COUNTED = ("tasks", "task_dependencies", "batches", "task_log", "pipeline_versions", "outbox")

OLD_DATA = [
    """INSERT INTO tasks (name, pipeline, handler, params) VALUES
       ('load', 'sales', 'python.noop', '{}'), ('report', 'sales', 'python.noop', '{}')""",
    """INSERT INTO task_dependencies (child_task_id, parent_task_id)
       SELECT c.task_id, p.task_id FROM tasks c, tasks p
       WHERE c.name = 'report' AND p.name = 'load'""",
    """INSERT INTO batches (pipeline, batch_id, status, version_id)
       VALUES ('sales', '2024-03', 'SUCCESS', dagrelay_pipeline_version('sales', now()))""",
    """INSERT INTO task_log (pipeline, batch_id, task_id, status, attempt)
       SELECT 'sales', '2024-03', task_id, 'SUCCESS', 1 FROM tasks""",
]

VERSION = "SELECT dagrelay_pipeline_version('sales', now())"
PIN_DEFINITION = (
    "SELECT pg_get_functiondef(p.oid) FROM pg_proc p WHERE p.proname = 'dagrelay_pipeline_version'"
)
ASSET_TABLES = (
    "SELECT count(*) FROM information_schema.tables "
    "WHERE table_name IN ('asset_events', 'asset_schedules', 'asset_triggers')"
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
    before, version = counts(old_db), one(old_db, VERSION)
    migrate.upgrade(old_db, AFTER)
    assert counts(old_db) == before
    assert one(old_db, "SELECT count(*) FROM tasks WHERE updates <> '{}'") == 0
    assert one(old_db, "SELECT count(*) FROM version_tasks WHERE updates <> '{}'") == 0
    assert one(old_db, VERSION) == version  # the same content: the same version
    assert one(old_db, ASSET_TABLES) == 3
    with old_db.begin() as conn:
        conn.execute(text("UPDATE tasks SET updates = '{bq://finance.sales}' WHERE name = 'load'"))
    newer = one(old_db, VERSION)
    assert newer != version
    stored = f"SELECT updates FROM version_tasks WHERE version_id = {newer} AND name = 'load'"
    assert one(old_db, stored) == ["bq://finance.sales"]


def test_the_database_refuses_an_empty_asset_name(old_db: Engine) -> None:
    migrate.upgrade(old_db, AFTER)
    with pytest.raises(Exception, match="tasks_updates_check"), old_db.begin() as conn:
        conn.execute(text("UPDATE tasks SET updates = '{\"\"}' WHERE name = 'load'"))


def test_downgrade_keeps_the_rows_and_restores_the_snapshot_function(old_db: Engine) -> None:
    before, definition = counts(old_db), one(old_db, PIN_DEFINITION)
    migrate.upgrade(old_db, AFTER)
    assert one(old_db, PIN_DEFINITION) != definition
    migrate.downgrade(old_db, BEFORE)
    assert migrate.current(old_db) == BEFORE
    assert counts(old_db) == before
    assert one(old_db, PIN_DEFINITION) == definition
    assert one(old_db, ASSET_TABLES) == 0
    migrate.upgrade(old_db, AFTER)  # and up again
    assert one(old_db, ASSET_TABLES) == 3
