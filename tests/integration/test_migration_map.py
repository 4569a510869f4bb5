"""Migration 0012 (mapped tasks) on a database holding 0010's schema and data: every row is
kept (task_log rows become map_index -1), unmapped pipelines keep their version, and the
downgrade goes back unless mapped tasks exist, then refuses, saying why."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from dagrelay.store import migrate
from tests.migration_helpers import database_at, row_counts

pytestmark = pytest.mark.integration

BEFORE = "0010"
MAP = "0012"
COUNTED = ("tasks", "batches", "task_log", "task_attempts", "task_fanin", "pipeline_versions")

OLD_DATA = [
    """INSERT INTO tasks (name, pipeline, handler, params) VALUES
       ('extract', 'sales', 'python.noop', '{}'), ('load', 'sales', 'python.noop', '{"n": 1}')""",
    """INSERT INTO task_dependencies (child_task_id, parent_task_id)
       SELECT c.task_id, p.task_id FROM tasks c, tasks p
       WHERE p.name = 'extract' AND c.name = 'load'""",
    """INSERT INTO batches (pipeline, batch_id, status, version_id)
       VALUES ('sales', '2024-03', 'SUCCESS', dagrelay_pipeline_version('sales', now()))""",
    """INSERT INTO task_log (pipeline, batch_id, task_id, status, attempt, output)
       SELECT 'sales', '2024-03', task_id, 'SUCCESS', 1, '{"rows": 3}' FROM tasks""",
    """INSERT INTO task_attempts (log_id, batch_id, task_id, attempt, started_at, outcome)
       SELECT log_id, batch_id, task_id, 1, now(), status FROM task_log""",
    """INSERT INTO task_fanin (pipeline, batch_id, task_id, parents, succeeded)
       SELECT 'sales', '2024-03', task_id, 1, 1 FROM tasks WHERE name = 'load'""",
]


@pytest.fixture
def old_db(empty_db_url: str) -> Iterator[Engine]:
    with database_at(empty_db_url, BEFORE, OLD_DATA) as engine:
        yield engine


def counts(db: Engine) -> dict[str, int]:
    return row_counts(db, COUNTED)


def rows(db: Engine) -> list[tuple[object, ...]]:
    with db.connect() as conn:
        found = conn.execute(
            text("SELECT log_id, task_id, status::text, output FROM task_log ORDER BY log_id")
        )
        return [tuple(r) for r in found]


def test_upgrade_keeps_rows_and_versions_and_downgrades(old_db: Engine) -> None:
    before, old_rows = counts(old_db), rows(old_db)
    migrate.upgrade(old_db, MAP)
    assert counts(old_db) == before
    assert rows(old_db) == old_rows
    with old_db.begin() as conn:
        indexes = conn.execute(text("SELECT DISTINCT map_index FROM task_log")).scalars().all()
        assert indexes == [-1]
        pinned = conn.execute(text("SELECT dagrelay_pipeline_version('sales', now())"))
        assert (
            pinned.scalar_one() == conn.execute(text("SELECT version_id FROM batches")).scalar_one()
        ), "an unmapped pipeline keeps its version"
    migrate.downgrade(old_db, BEFORE)
    assert counts(old_db) == before
    assert rows(old_db) == old_rows
    migrate.upgrade(old_db, MAP)
    assert counts(old_db) == before


def test_downgrade_refuses_while_a_task_is_mapped(old_db: Engine) -> None:
    migrate.upgrade(old_db, MAP)
    with old_db.begin() as conn:
        conn.execute(
            text("""UPDATE tasks SET map = '{"over": "extract.files"}'
                             WHERE name = 'load'""")
        )
    with pytest.raises(DBAPIError, match="cannot downgrade below 0012: mapped tasks: sales/load"):
        migrate.downgrade(old_db, BEFORE)
    assert migrate.current(old_db) == MAP
