"""Migration 0017 (priority with aging) on a database holding the 0016 schema and its data:
every row is kept and the queues take the aged order at once (nothing is stored: the order is
computed); the downgrade restores 0016's strict priority order, the exact text of its functions
and its indexes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from dagrelay.store import migrate
from tests.migration_helpers import database_at, row_counts

pytestmark = pytest.mark.integration

BEFORE = "0016"
AFTER = "0017"
COUNTED = ("tasks", "batches", "task_log", "pipeline_versions", "pools", "outbox")

OLD_DATA = [
    "INSERT INTO pools (name, slots) VALUES ('bq', 1)",
    """INSERT INTO tasks (name, pipeline, handler, params, pool, priority) VALUES
       ('low', 'sales', 'python.noop', '{}', 'bq', 0),
       ('high', 'sales', 'python.noop', '{}', 'bq', 10)""",
    """INSERT INTO batches (pipeline, batch_id, status, version_id)
       VALUES ('sales', '2024-03', 'RUNNING', dagrelay_pipeline_version('sales', now()))""",
    # low has waited 20 minutes, high 1 minute: 20 points of age against 10 of priority.
    """INSERT INTO task_log (pipeline, batch_id, task_id, status, attempt, queued_at, pool,
                            pool_slots, priority, limited)
       SELECT 'sales', '2024-03', task_id, 'QUEUED', 0,
              now() - CASE name WHEN 'low' THEN interval '20 minutes'
                                ELSE interval '1 minute' END,
              'bq', 1, priority, true
       FROM tasks""",
]

HEAD = "SELECT payload ->> 'task' FROM dagrelay_release_pool('bq', 'events', now())"
CLAIM_AGES = (
    "SELECT prosrc LIKE '%dagrelay_queue_key%' FROM pg_proc "
    "WHERE proname = 'dagrelay_claim_limited'"
)
POOL_INDEX = "SELECT indexdef FROM pg_indexes WHERE indexname = 'task_log_pool_queue_idx'"
DEFINITIONS = (
    "SELECT string_agg(pg_get_functiondef(p.oid), '' ORDER BY p.proname) FROM pg_proc p "
    "WHERE p.proname IN ('dagrelay_claim_limited', 'dagrelay_release_pool', "
    "'dagrelay_release_slots')"
)


@pytest.fixture
def old_db(empty_db_url: str) -> Iterator[Engine]:
    with database_at(empty_db_url, BEFORE, OLD_DATA) as engine:
        yield engine


def counts(db: Engine) -> dict[str, int]:
    return row_counts(db, COUNTED)


def one(db: Engine, sql: str) -> object:
    """The value of ``sql``, rolled back (a release writes outbox rows)."""
    with db.connect() as conn:
        value = conn.execute(text(sql)).scalar_one()
        conn.rollback()
        return value


def test_upgrade_keeps_every_row_and_ages_the_queue(old_db: Engine) -> None:
    before = counts(old_db)
    assert one(old_db, HEAD) == "high"  # 0016: strict priority
    assert one(old_db, CLAIM_AGES) is False
    migrate.upgrade(old_db, AFTER)
    assert counts(old_db) == before
    assert one(old_db, HEAD) == "low"  # 20 minutes of waiting outweigh 10 points
    assert one(old_db, CLAIM_AGES) is True
    assert "dagrelay_queue_key(queued_at, priority)" in str(one(old_db, POOL_INDEX))
    # A new claim of 'high' counts 'low' ahead of it: the pool's one slot is low's.
    with old_db.begin() as conn:
        conn.execute(
            text("UPDATE task_log SET status = 'NEW', queued_at = NULL WHERE priority = 10")
        )
    claimed = one(
        old_db,
        "SELECT ahead FROM dagrelay_claim_limited('sales', '2024-03', 'high', now(), 'w')",
    )
    assert claimed == 1


def test_downgrade_restores_strict_priority(old_db: Engine) -> None:
    before = counts(old_db)
    definitions = one(old_db, DEFINITIONS)
    migrate.upgrade(old_db, AFTER)
    assert one(old_db, DEFINITIONS) != definitions
    migrate.downgrade(old_db, BEFORE)
    assert migrate.current(old_db) == BEFORE
    assert counts(old_db) == before
    assert one(old_db, HEAD) == "high"
    assert one(old_db, CLAIM_AGES) is False
    assert one(old_db, DEFINITIONS) == definitions
    assert "priority DESC" in str(one(old_db, POOL_INDEX))
    assert one(old_db, "SELECT count(*) FROM pg_proc WHERE proname = 'dagrelay_queue_key'") == 0
    migrate.upgrade(old_db, AFTER)  # and up again
    assert one(old_db, HEAD) == "low"
