"""Migration 0014 (a map's max_parallel) on a database holding the 0013 schema and its data:
every row is kept, the claim learns the group's scope; the downgrade turns the instances that
waited only for their group back into NEW rows and restores 0013's functions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from dagrelay.store import migrate
from tests.migration_helpers import database_at, row_counts

pytestmark = pytest.mark.integration

BEFORE = "0013"
AFTER = "0014"
COUNTED = ("tasks", "batches", "task_log", "task_attempts", "pipeline_versions", "pools")

OLD_DATA = [
    "INSERT INTO pools (name, slots) VALUES ('bigquery', 2)",
    """INSERT INTO tasks (name, pipeline, handler, params, pool, map) VALUES
       ('src', 'sales', 'python.noop', '{}', NULL, NULL),
       ('each', 'sales', 'python.noop', '{}', NULL, '{"over": "src.items", "max_parallel": 1}'),
       ('load', 'sales', 'python.noop', '{}', 'bigquery', '{"over": "src.items"}')""",
    """INSERT INTO batches (pipeline, batch_id, status, version_id)
       VALUES ('sales', '2024-03', 'RUNNING', dagrelay_pipeline_version('sales', now()))""",
    # Two QUEUED instances: one of 'each' (waits for its group), one of 'load' (for its pool).
    """INSERT INTO task_log (pipeline, batch_id, task_id, status, attempt, map_index, item,
                            queued_at, pool, pool_slots, limited)
       SELECT 'sales', '2024-03', task_id, 'QUEUED', 0, 0, '0'::jsonb, now(), pool,
              CASE WHEN pool IS NOT NULL THEN 1 END, true
       FROM tasks WHERE name IN ('each', 'load')""",
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


def statuses(db: Engine) -> dict[str, str]:
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT t.name, tl.status::text FROM task_log tl "
                "JOIN tasks t USING (task_id) ORDER BY t.name"
            )
        ).all()
    return {str(r[0]): str(r[1]) for r in rows}


CLAIM_KNOWS_GROUPS = (
    "SELECT prosrc LIKE '%max_parallel%' FROM pg_proc WHERE proname = 'dagrelay_claim_limited'"
)


def test_upgrade_keeps_every_row_and_teaches_the_claim_the_group(old_db: Engine) -> None:
    before = counts(old_db)
    assert one(old_db, CLAIM_KNOWS_GROUPS) is False
    migrate.upgrade(old_db, AFTER)
    assert counts(old_db) == before
    assert statuses(old_db) == {"each": "QUEUED", "load": "QUEUED"}
    assert one(old_db, CLAIM_KNOWS_GROUPS) is True
    # The queued instance of the group of 1 is claimed: nothing of its group runs.
    claimed = one(
        old_db,
        "SELECT status FROM dagrelay_claim_limited('sales', '2024-03', 'each', now(), 'w', 0)",
    )
    assert claimed == "PROCESSING"


def test_downgrade_unqueues_group_waiters_only_and_restores_the_claim(old_db: Engine) -> None:
    before = counts(old_db)
    migrate.upgrade(old_db, AFTER)
    migrate.downgrade(old_db, BEFORE)
    assert migrate.current(old_db) == BEFORE
    assert counts(old_db) == before
    assert statuses(old_db) == {"each": "NEW", "load": "QUEUED"}
    assert one(old_db, CLAIM_KNOWS_GROUPS) is False
    migrate.upgrade(old_db, AFTER)  # and up again
    assert one(old_db, CLAIM_KNOWS_GROUPS) is True
