"""Migration 0016 (the limited claim's two status writes fenced) on a database holding the 0015
schema and its data: every row is kept, both UPDATEs of ``dagrelay_claim_limited`` gain their
status predicate, the claim still claims and queues; the downgrade restores 0015's text."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from dagrelay.store import migrate
from tests.migration_helpers import database_at, row_counts
from tests.tools.sql_fence import status_updates

pytestmark = pytest.mark.integration

BEFORE = "0015"
AFTER = "0016"
COUNTED = ("tasks", "batches", "task_log", "task_attempts", "pipeline_versions", "pools")

OLD_DATA = [
    "INSERT INTO pools (name, slots) VALUES ('bigquery', 1)",
    """INSERT INTO tasks (name, pipeline, handler, params, pool) VALUES
       ('first', 'sales', 'python.noop', '{}', 'bigquery'),
       ('second', 'sales', 'python.noop', '{}', 'bigquery')""",
    """INSERT INTO batches (pipeline, batch_id, status, version_id)
       VALUES ('sales', '2024-03', 'RUNNING', dagrelay_pipeline_version('sales', now()))""",
    """INSERT INTO task_log (pipeline, batch_id, task_id, status)
       SELECT 'sales', '2024-03', task_id, 'NEW' FROM tasks""",
]
DEFINITION = (
    "SELECT pg_get_functiondef(p.oid) FROM pg_proc p WHERE p.proname = 'dagrelay_claim_limited'"
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


def fences(db: Engine) -> list[bool]:
    return [update.fenced for update in status_updates(str(one(db, DEFINITION)))]


def claim(db: Engine, task: str) -> object:
    return one(
        db, f"SELECT status FROM dagrelay_claim_limited('sales', '2024-03', '{task}', now(), 'w')"
    )


def test_upgrade_keeps_every_row_and_fences_both_writes_of_the_claim(old_db: Engine) -> None:
    before = counts(old_db)
    assert fences(old_db) == [False, False]
    migrate.upgrade(old_db, AFTER)
    assert counts(old_db) == before
    assert fences(old_db) == [True, True]
    # A pool of one slot: the first claim runs, the second queues, a repeat finds nothing.
    assert claim(old_db, "first") == "PROCESSING"
    assert claim(old_db, "second") == "QUEUED"
    with old_db.connect() as conn:
        repeat = conn.execute(
            text("SELECT * FROM dagrelay_claim_limited('sales', '2024-03', 'first', now(), 'w')")
        ).all()
    assert repeat == []


def test_downgrade_restores_the_text_of_0015(old_db: Engine) -> None:
    original = one(old_db, DEFINITION)
    migrate.upgrade(old_db, AFTER)
    migrate.downgrade(old_db, BEFORE)
    assert migrate.current(old_db) == BEFORE
    assert one(old_db, DEFINITION) == original
    migrate.upgrade(old_db, AFTER)  # and up again
    assert fences(old_db) == [True, True]
