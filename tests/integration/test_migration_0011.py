"""Migration 0011 (CANCELLING, descriptions) on a database that holds the previous schema and
its data: rows kept both ways, CANCELLING mapped to CANCELLED on the way down."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text

from dagrelay.store import migrate

pytestmark = pytest.mark.integration

BEFORE = "0009"
COUNTED = ("tasks", "task_dependencies", "batches", "task_log")


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
        conn.execute(
            text(
                "INSERT INTO batches (pipeline, batch_id, status, finished_at) VALUES "
                "('p', 'running', 'RUNNING', NULL), ('p', 'done', 'SUCCESS', now()), "
                "('p', 'stopped', 'CANCELLED', now())"
            )
        )
        conn.execute(
            text(
                "INSERT INTO task_log (pipeline, batch_id, task_id, status) "
                "SELECT 'p', 'stopped', task_id, 'CANCELLED' FROM tasks WHERE name = 'a'"
            )
        )
    yield engine
    engine.dispose()


def state(db: Engine) -> tuple[dict[str, int], dict[str, str]]:
    with db.connect() as conn:
        counts = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in COUNTED}
        rows = conn.execute(text("SELECT batch_id, status::text FROM batches")).all()
    return counts, {r[0]: r[1] for r in rows}


def labels(db: Engine) -> list[str]:
    with db.connect() as conn:
        sql = "SELECT unnest(enum_range(NULL::batch_status))::text"
        return list(conn.execute(text(sql)).scalars())


def test_0011_up_and_down_keeps_the_rows(old_db: Engine) -> None:
    before = state(old_db)
    assert before[1] == {"running": "RUNNING", "done": "SUCCESS", "stopped": "CANCELLED"}

    migrate.upgrade(old_db, "0011")
    assert state(old_db) == before
    assert labels(old_db) == ["RUNNING", "CANCELLING", "SUCCESS", "FAILED", "CANCELLED"]
    with old_db.begin() as conn:
        conn.execute(text("UPDATE batches SET status = 'CANCELLING' WHERE batch_id = 'running'"))
        conn.execute(text("UPDATE tasks SET description = 'loads a' WHERE name = 'a'"))
        conn.execute(text("INSERT INTO pipelines (pipeline, description) VALUES ('p', 'doc')"))

    migrate.downgrade(old_db, BEFORE)
    counts, statuses = state(old_db)
    assert counts == before[0]
    assert statuses == before[1] | {"running": "CANCELLED"}  # CANCELLING -> CANCELLED
    assert labels(old_db) == ["RUNNING", "SUCCESS", "FAILED", "CANCELLED"]
    with old_db.connect() as conn:
        finished = "SELECT finished_at IS NOT NULL FROM batches WHERE batch_id = 'running'"
        assert conn.execute(text(finished)).scalar_one() is True
        assert conn.execute(text("SELECT to_regclass('pipelines')")).scalar_one() is None
        # the function that returns the type was rebuilt on the new type, and works
        outcome = "SELECT dagrelay_batch_outcome('p', 'done')::text"
        assert conn.execute(text(outcome)).scalar_one() == "SUCCESS"
        default = "INSERT INTO batches (pipeline, batch_id) VALUES ('p', 'new') RETURNING status"
        assert conn.execute(text(default)).scalar_one() == "RUNNING"
        conn.rollback()

    migrate.upgrade(old_db, "0011")  # and up again
    assert state(old_db)[0] == before[0]
