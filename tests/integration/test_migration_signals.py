"""Migration 0018 (signals) on a database holding the 0017 schema and its data: every row is
kept, a deferred attempt from before it keeps its job and can be woken by a signal's key; the
downgrade drops the table and the index and keeps every other row."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from dagrelay.store import migrate
from tests.migration_helpers import database_at, row_counts

pytestmark = pytest.mark.integration

BEFORE = "0017"
AFTER = "0018"
COUNTED = ("tasks", "batches", "task_log", "task_attempts", "pipeline_versions", "outbox")

OLD_DATA = [
    """INSERT INTO tasks (name, pipeline, handler, params) VALUES
       ('wait', 'sales', 'sensor.signal', '{"key": "crm.done"}'),
       ('load', 'sales', 'python.noop', '{}')""",
    """INSERT INTO batches (pipeline, batch_id, status, version_id)
       VALUES ('sales', '2024-03', 'RUNNING', dagrelay_pipeline_version('sales', now()))""",
    """INSERT INTO task_log (pipeline, batch_id, task_id, status, attempt, job, poll_at,
                            lease_expires_at)
       SELECT 'sales', '2024-03', task_id, 'PROCESSING', 1,
              '{"waiting_for": "signal crm.done", "signal_key": "crm.done"}',
              now() + interval '5 minutes', now() + interval '1 hour'
       FROM tasks WHERE name = 'wait'""",
    """INSERT INTO task_log (pipeline, batch_id, task_id, status, attempt)
       SELECT 'sales', '2024-03', task_id, 'SUCCESS', 1 FROM tasks WHERE name = 'load'""",
    """INSERT INTO task_attempts (log_id, batch_id, task_id, attempt, started_at)
       SELECT log_id, batch_id, task_id, 1, now() FROM task_log""",
]

WAKE = (
    "SELECT count(*) FROM (SELECT 1 FROM task_log "
    "WHERE job ? 'signal_key' AND job ->> 'signal_key' = 'crm.done') w"
)
TABLE = "SELECT to_regclass('signals') IS NOT NULL"
INDEX = "SELECT to_regclass('task_log_waiting_signal_idx') IS NOT NULL"


@pytest.fixture
def old_db(empty_db_url: str) -> Iterator[Engine]:
    with database_at(empty_db_url, BEFORE, OLD_DATA) as engine:
        yield engine


def counts(db: Engine) -> dict[str, int]:
    return row_counts(db, COUNTED)


def one(db: Engine, sql: str) -> object:
    with db.connect() as conn:
        return conn.execute(text(sql)).scalar_one()


def test_upgrade_keeps_every_row_and_finds_the_waiting_sensor(old_db: Engine) -> None:
    before = counts(old_db)
    assert one(old_db, TABLE) is False
    migrate.upgrade(old_db, AFTER)
    assert counts(old_db) == before
    assert one(old_db, TABLE) is True
    assert one(old_db, INDEX) is True
    assert one(old_db, WAKE) == 1
    with old_db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO signals (key, dedupe_id, received_at) VALUES ('crm.done', 'm1', now())"
            )
        )
        again = conn.execute(
            text(
                "INSERT INTO signals (key, dedupe_id, received_at) "
                "VALUES ('crm.done', 'm1', now()) "
                "ON CONFLICT (dedupe_id) DO NOTHING RETURNING signal_id"
            )
        ).all()
    assert again == []  # recorded once


def test_the_table_refuses_a_bad_key_or_payload(old_db: Engine) -> None:
    migrate.upgrade(old_db, AFTER)
    for values in ("('has space', '{}')", "('k', '[1]')"):
        with pytest.raises(Exception, match="check constraint"), old_db.begin() as conn:
            conn.execute(
                text(
                    f"INSERT INTO signals (key, payload, received_at) VALUES {values[:-1]}, now())"
                )
            )


def test_downgrade_drops_signals_and_keeps_every_other_row(old_db: Engine) -> None:
    before = counts(old_db)
    migrate.upgrade(old_db, AFTER)
    with old_db.begin() as conn:
        conn.execute(text("INSERT INTO signals (key, received_at) VALUES ('crm.done', now())"))
    migrate.downgrade(old_db, BEFORE)
    assert migrate.current(old_db) == BEFORE
    assert counts(old_db) == before
    assert one(old_db, TABLE) is False
    assert one(old_db, INDEX) is False
    migrate.upgrade(old_db, AFTER)  # and up again
    assert one(old_db, "SELECT count(*) FROM signals") == 0
