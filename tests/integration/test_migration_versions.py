"""Migration 0010 (pipeline versions) on a database holding the old schema and its data: every
row is kept, old batches are pinned to a version holding their tasks, and the downgrade goes
back when the data allows it and otherwise refuses, saying why."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from dagrelay.store import migrate
from tests.migration_helpers import database_at, row_counts

pytestmark = pytest.mark.integration

BEFORE = "0004"
VERSIONS = "0010"
HISTORY = ("tasks", "task_dependencies", "batches", "task_log", "task_attempts", "task_fanin")
COUNTED = (*HISTORY, "outbox")

OLD_DATA = [
    """INSERT INTO tasks (name, pipeline, handler, params) VALUES
       ('extract', 'sales', 'python.noop', '{}'), ('load', 'sales', 'python.noop', '{"n": 1}'),
       ('fetch', 'costs', 'python.noop', '{}'), ('sum', 'costs', 'python.noop', '{}')""",
    """INSERT INTO task_dependencies (child_task_id, parent_task_id)
       SELECT c.task_id, p.task_id FROM tasks c, tasks p
       WHERE (p.name, c.name) IN (('extract', 'load'), ('fetch', 'sum'))""",
    """INSERT INTO batches (pipeline, batch_id, status) VALUES
       ('sales', '2024-03', 'SUCCESS'), ('costs', '2024-03', 'FAILED'),
       ('sales', '2024-04', 'RUNNING')""",
    """INSERT INTO task_log (pipeline, batch_id, task_id, status, attempt)
       SELECT b.pipeline, b.batch_id, t.task_id,
              CASE WHEN b.status = 'FAILED' AND t.name = 'sum' THEN 'ERROR'
                   WHEN b.status = 'RUNNING' THEN 'NEW' ELSE 'SUCCESS' END::task_status, 1
       FROM batches b JOIN tasks t ON t.pipeline = b.pipeline""",
    """INSERT INTO task_attempts (log_id, batch_id, task_id, attempt, started_at, outcome)
       SELECT log_id, batch_id, task_id, 1, now(), status FROM task_log
       WHERE status <> 'NEW'""",
    """INSERT INTO task_fanin (pipeline, batch_id, task_id, parents, succeeded)
       SELECT tl.pipeline, tl.batch_id, tl.task_id, 1, 1 FROM task_log tl
       JOIN tasks t USING (task_id) WHERE t.name IN ('load', 'sum')""",
    """INSERT INTO outbox (topic, payload, log_id)
       SELECT 'dagrelay-events', jsonb_build_object('action', 'run_task', 'task', 'extract',
              'batch_id', batch_id), log_id
       FROM task_log WHERE status = 'NEW'""",
]


@pytest.fixture
def old_db(empty_db_url: str) -> Iterator[Engine]:
    with database_at(empty_db_url, BEFORE, OLD_DATA) as engine:
        yield engine


def counts(db: Engine) -> dict[str, int]:
    return row_counts(db, COUNTED)


def test_upgrade_keeps_every_row_and_pins_old_batches(old_db: Engine) -> None:
    before = counts(old_db)
    assert before == {
        "tasks": 4,
        "task_dependencies": 2,
        "batches": 3,
        "task_log": 6,
        "task_attempts": 4,
        "task_fanin": 3,
        "outbox": 2,
    }
    migrate.upgrade(old_db, VERSIONS)
    assert counts(old_db) == before
    with old_db.connect() as conn:
        versions = conn.execute(
            text("SELECT pipeline, version FROM pipeline_versions ORDER BY pipeline")
        ).all()
        assert [tuple(v) for v in versions] == [("costs", 1), ("sales", 1)]
        # Every history row finds its task (by id) in its batch's version.
        orphans = conn.execute(
            text(
                "SELECT count(*) FROM task_log tl JOIN batches b USING (pipeline, batch_id) "
                "LEFT JOIN version_tasks vt ON vt.version_id = b.version_id "
                "AND vt.task_id = tl.task_id WHERE vt.task_id IS NULL"
            )
        ).scalar_one()
        assert orphans == 0
        edges = conn.execute(text("SELECT count(*) FROM version_edges")).scalar_one()
        assert edges == 2


def test_downgrade_goes_back_with_every_row(old_db: Engine) -> None:
    before = counts(old_db)
    migrate.upgrade(old_db, VERSIONS)
    migrate.downgrade(old_db, BEFORE)
    assert migrate.current(old_db) == BEFORE
    assert counts(old_db) == before


def test_downgrade_refuses_a_task_name_two_pipelines_share(old_db: Engine) -> None:
    migrate.upgrade(old_db, VERSIONS)
    with old_db.begin() as conn:
        conn.execute(
            text("INSERT INTO tasks (name, pipeline, handler) VALUES ('load', 'costs', 'x')")
        )
    with pytest.raises(
        DBAPIError, match=r"task names are shared by pipelines: load \(costs, sales"
    ):
        migrate.downgrade(old_db, BEFORE)
    assert migrate.current(old_db) == VERSIONS


def test_downgrade_refuses_history_of_a_removed_task(old_db: Engine) -> None:
    migrate.upgrade(old_db, VERSIONS)
    with old_db.begin() as conn:
        conn.execute(text("DELETE FROM tasks WHERE name = 'sum'"))  # allowed now: history stays
    with pytest.raises(DBAPIError, match="history names tasks removed from the live definition"):
        migrate.downgrade(old_db, BEFORE)
    assert migrate.current(old_db) == VERSIONS
