"""Migration 0015 (teardown tasks) on a database holding the 0014 schema and its data: every row
is kept with ``teardown = false``, a pipeline's version keeps its content hash, the functions
learn the flag; the downgrade cancels what waits in a CANCELLING batch (the old claim would
never take it) and restores the functions of 0014."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from dagrelay.store import migrate
from tests.migration_helpers import database_at, row_counts

pytestmark = pytest.mark.integration

BEFORE = "0014"
AFTER = "0015"
COUNTED = ("tasks", "batches", "task_log", "pipeline_versions", "version_tasks")

OLD_DATA = [
    """INSERT INTO tasks (name, pipeline, handler, params, trigger_rule) VALUES
       ('work', 'sales', 'python.noop', '{}', 'all_success'),
       ('cleanup', 'sales', 'python.noop', '{}', 'all_done')""",
    """INSERT INTO task_dependencies (child_task_id, parent_task_id)
       SELECT c.task_id, p.task_id FROM tasks c, tasks p
       WHERE c.name = 'cleanup' AND p.name = 'work'""",
    """INSERT INTO batches (pipeline, batch_id, status, version_id)
       VALUES ('sales', '2024-03', 'RUNNING', dagrelay_pipeline_version('sales', now()))""",
    """INSERT INTO task_log (pipeline, batch_id, task_id, status)
       SELECT 'sales', '2024-03', task_id, 'NEW' FROM tasks WHERE name = 'work'""",
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


FUNCTIONS_KNOW_TEARDOWN = (
    "SELECT bool_and(prosrc LIKE '%teardown%') FROM pg_proc WHERE proname IN "
    "('dagrelay_claim_limited', 'dagrelay_advance_children', 'dagrelay_pipeline_version')"
)


def test_upgrade_keeps_every_row_and_every_version(old_db: Engine) -> None:
    before = counts(old_db)
    assert one(old_db, FUNCTIONS_KNOW_TEARDOWN) is False
    migrate.upgrade(old_db, AFTER)
    assert counts(old_db) == before
    assert one(old_db, "SELECT count(*) FROM tasks WHERE NOT teardown") == 2
    assert one(old_db, "SELECT count(*) FROM version_tasks WHERE NOT teardown") == 2
    assert one(old_db, FUNCTIONS_KNOW_TEARDOWN) is True
    # The unchanged pipeline keeps its version (a false flag is not hashed); the flag makes one.
    assert one(old_db, "SELECT dagrelay_pipeline_version('sales', now())") == one(
        old_db, "SELECT version_id FROM batches"
    )
    one(old_db, "UPDATE tasks SET teardown = true WHERE name = 'cleanup' RETURNING 1")
    assert one(old_db, "SELECT dagrelay_pipeline_version('sales', now())") != one(
        old_db, "SELECT version_id FROM batches"
    )


def test_downgrade_cancels_what_waits_in_a_cancelling_batch(old_db: Engine) -> None:
    migrate.upgrade(old_db, AFTER)
    one(old_db, "UPDATE batches SET status = 'CANCELLING' RETURNING 1")
    migrate.downgrade(old_db, BEFORE)
    assert migrate.current(old_db) == BEFORE
    assert one(old_db, "SELECT status::text FROM task_log") == "CANCELLED"
    assert one(old_db, FUNCTIONS_KNOW_TEARDOWN) is False
    assert (
        one(
            old_db,
            "SELECT count(*) FROM information_schema.columns WHERE column_name = 'teardown'",
        )
        == 0
    )
    migrate.upgrade(old_db, AFTER)  # and up again
    assert one(old_db, FUNCTIONS_KNOW_TEARDOWN) is True
