"""Migration 0022 (the deploy step's record, ``deploys``) on a database holding the 0021 schema
and its data: every row is kept; the downgrade drops the table and nothing else."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from dagrelay.store import migrate
from tests.migration_helpers import database_at, row_counts

pytestmark = pytest.mark.integration

BEFORE = "0021"
AFTER = "0022"
COUNTED = ("tasks", "batches", "task_log", "pipeline_versions")

OLD_DATA = [
    "INSERT INTO tasks (name, pipeline, handler) VALUES ('load', 'sales', 'python.noop')",
    """INSERT INTO batches (pipeline, batch_id, status, version_id)
       VALUES ('sales', '2024-03', 'SUCCESS', dagrelay_pipeline_version('sales', now()))""",
    """INSERT INTO task_log (pipeline, batch_id, task_id, status, attempt)
       SELECT 'sales', '2024-03', task_id, 'SUCCESS', 1 FROM tasks""",
]
TABLE = "SELECT to_regclass('deploys') IS NOT NULL"


@pytest.fixture
def old_db(empty_db_url: str) -> Iterator[Engine]:
    with database_at(empty_db_url, BEFORE, OLD_DATA) as engine:
        yield engine


def one(db: Engine, sql: str) -> object:
    with db.begin() as conn:
        return conn.execute(text(sql)).scalar_one()


def test_upgrade_keeps_every_row_and_downgrade_drops_only_the_record(old_db: Engine) -> None:
    before = row_counts(old_db, COUNTED)
    assert one(old_db, TABLE) is False
    migrate.upgrade(old_db, AFTER)
    assert row_counts(old_db, COUNTED) == before
    with old_db.begin() as conn:
        conn.execute(
            text("INSERT INTO deploys (archive, revision, applied_at) VALUES ('h1', '0022', now())")
        )
    with pytest.raises(Exception, match="deploys_archive_format"), old_db.begin() as conn:
        conn.execute(
            text("INSERT INTO deploys (archive, revision, applied_at) VALUES ('a b', 'x', now())")
        )
    migrate.downgrade(old_db, BEFORE)
    assert one(old_db, TABLE) is False
    assert row_counts(old_db, COUNTED) == before
