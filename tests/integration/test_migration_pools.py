"""Migration 0013 (pools) on a database holding the 0010 schema and its data: every row is
kept, a pool a task already named gets a pools row (so nothing waits after the upgrade), a
pipeline's version stays the same; the downgrade turns QUEUED rows back into NEW ones."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from dagrelay.store import migrate
from tests.migration_helpers import database_at, row_counts

pytestmark = pytest.mark.integration

BEFORE = "0010"
POOLS = "0013"
COUNTED = ("tasks", "batches", "task_log", "task_attempts", "pipeline_versions", "outbox")

OLD_DATA = [
    """INSERT INTO tasks (name, pipeline, handler, params, pool) VALUES
       ('extract', 'sales', 'python.noop', '{}', 'bigquery'),
       ('load', 'sales', 'python.noop', '{}', NULL)""",
    """INSERT INTO batches (pipeline, batch_id, status, version_id)
       VALUES ('sales', '2024-03', 'RUNNING', dagrelay_pipeline_version('sales', now()))""",
    """INSERT INTO task_log (pipeline, batch_id, task_id, status, attempt)
       SELECT 'sales', '2024-03', task_id, 'NEW', 0 FROM tasks""",
    """INSERT INTO outbox (topic, payload, log_id)
       SELECT 'dagrelay-events', jsonb_build_object('action', 'run_task'), log_id FROM task_log""",
]


@pytest.fixture
def old_db(empty_db_url: str) -> Iterator[Engine]:
    with database_at(empty_db_url, BEFORE, OLD_DATA) as engine:
        yield engine


def counts(db: Engine) -> dict[str, int]:
    return row_counts(db, COUNTED)


def one(db: Engine, sql: str) -> object:
    with db.begin() as conn:
        return conn.execute(text(sql)).scalar_one()


def test_upgrade_keeps_rows_defines_named_pools_and_keeps_the_version(old_db: Engine) -> None:
    before = counts(old_db)
    version = one(old_db, "SELECT version_id FROM batches")
    migrate.upgrade(old_db, POOLS)
    assert counts(old_db) == before
    with old_db.connect() as conn:
        pools = conn.execute(text("SELECT name, slots FROM pools")).all()
        settings = conn.execute(
            text("SELECT DISTINCT pool_slots, priority, max_active FROM version_tasks")
        ).all()
    assert [tuple(p) for p in pools] == [("bigquery", 128)]
    assert [tuple(s) for s in settings] == [(1, 0, None)]
    # An unchanged pipeline hashes as before: its next batch runs the same version.
    assert one(old_db, "SELECT dagrelay_pipeline_version('sales', now())") == version
    assert one(old_db, "SELECT count(*) FROM task_log WHERE limited OR pool IS NOT NULL") == 0


def test_a_changed_pool_setting_is_a_new_version(old_db: Engine) -> None:
    migrate.upgrade(old_db, POOLS)
    version = one(old_db, "SELECT version_id FROM batches")
    one(old_db, "UPDATE tasks SET priority = 5 WHERE name = 'extract' RETURNING 1")
    changed = one(old_db, "SELECT dagrelay_pipeline_version('sales', now())")
    assert changed != version
    assert one(old_db, f"SELECT priority FROM version_tasks WHERE version_id = {changed} "
               "AND name = 'extract'") == 5  # fmt: skip


def test_downgrade_turns_queued_rows_into_new_ones_and_keeps_every_row(old_db: Engine) -> None:
    before = counts(old_db)
    migrate.upgrade(old_db, POOLS)
    one(
        old_db,
        "UPDATE task_log SET status = 'QUEUED', queued_at = now(), pool = 'bigquery', "
        "pool_slots = 1, limited = true WHERE task_id = (SELECT task_id FROM tasks "
        "WHERE name = 'extract') RETURNING 1",
    )
    migrate.downgrade(old_db, BEFORE)
    assert migrate.current(old_db) == BEFORE
    assert counts(old_db) == before
    assert one(old_db, "SELECT count(*) FROM task_log WHERE status::text = 'NEW'") == 2
    assert one(old_db, "SELECT to_regclass('pools') IS NULL") is True
    migrate.upgrade(old_db, POOLS)  # and up again
    assert one(old_db, "SELECT count(*) FROM pools") == 1
