"""Migration 0009 (schedules) on a database that holds the previous schema and its data."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text

from dagrelay.store import migrate
from tests.migration_helpers import row_counts

pytestmark = pytest.mark.integration

BEFORE = "0004"
COUNTED = ("tasks", "task_dependencies", "batches", "task_log", "outbox")


@pytest.fixture
def old_db(empty_db_url: str) -> Iterator[Engine]:
    engine = create_engine(empty_db_url)
    migrate.upgrade(engine, BEFORE)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tasks (name, pipeline, handler) VALUES "
                "('a', 'p', 'python.noop'), ('b', 'p', 'python.noop')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO task_dependencies (child_task_id, parent_task_id) "
                "SELECT c.task_id, p.task_id FROM tasks c, tasks p "
                "WHERE c.name = 'b' AND p.name = 'a'"
            )
        )
        conn.execute(text("INSERT INTO batches (pipeline, batch_id) VALUES ('p', '2024-03')"))
        conn.execute(
            text(
                "INSERT INTO task_log (pipeline, batch_id, task_id, status) "
                "SELECT 'p', '2024-03', task_id, 'SUCCESS' FROM tasks WHERE name = 'a'"
            )
        )
        conn.execute(text("INSERT INTO outbox (topic, payload) VALUES ('t', '{}')"))
    yield engine
    engine.dispose()


def counts(db: Engine) -> dict[str, int]:
    return row_counts(db, COUNTED)


def test_schedules_migrate_up_and_down_keeping_the_old_rows(old_db: Engine) -> None:
    before = counts(old_db)
    assert before == {"tasks": 2, "task_dependencies": 1, "batches": 1, "task_log": 1, "outbox": 1}

    migrate.upgrade(old_db, "0009")
    assert counts(old_db) == before
    with old_db.begin() as conn:
        conn.execute(text("INSERT INTO schedules (pipeline, cron) VALUES ('p', '0 6 1 * *')"))
        row = conn.execute(text("SELECT timezone, catchup, overlap, paused FROM schedules"))
        assert tuple(row.one()) == ("Etc/UTC", "latest", "skip", False)

    migrate.downgrade(old_db, BEFORE)
    assert migrate.current(old_db) == BEFORE
    assert counts(old_db) == before
    with old_db.connect() as conn:
        assert conn.execute(text("SELECT to_regclass('schedules')")).scalar_one() is None

    migrate.upgrade(old_db, "0009")  # and up again
    assert counts(old_db) == before
