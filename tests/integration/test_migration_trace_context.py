"""Migration 0021 (each batch's trace context) on a database holding the 0020 schema and its
data: every batch is kept with no context, a new one takes a traceparent and refuses anything
else; the downgrade drops the column and keeps the rows."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from dagrelay.store import migrate
from tests.migration_helpers import database_at

pytestmark = pytest.mark.integration

BEFORE = "0020"
AFTER = "0021"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

OLD_DATA = [
    "INSERT INTO tasks (name, pipeline, handler) VALUES ('a', 'sales', 'python.noop')",
    """INSERT INTO batches (pipeline, batch_id, status, version_id)
       VALUES ('sales', '2024-03', 'SUCCESS', dagrelay_pipeline_version('sales', now()))""",
]
NEW_BATCH = """INSERT INTO batches (pipeline, batch_id, status, version_id, trace_context)
    SELECT 'sales', :batch_id, 'RUNNING', version_id, :context FROM batches LIMIT 1"""


@pytest.fixture
def old_db(empty_db_url: str) -> Iterator[Engine]:
    with database_at(empty_db_url, BEFORE, OLD_DATA) as engine:
        yield engine


def batches(db: Engine) -> list[tuple[str, str]]:
    with db.connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT batch_id, status FROM batches"))]


def test_upgrade_keeps_batches_and_takes_a_traceparent(old_db: Engine) -> None:
    before = batches(old_db)
    migrate.upgrade(old_db, AFTER)
    assert batches(old_db) == before
    with old_db.begin() as conn:
        assert conn.execute(text("SELECT trace_context FROM batches")).scalar_one() is None
        conn.execute(text(NEW_BATCH), {"batch_id": "2024-04", "context": TRACEPARENT})
    with pytest.raises(DBAPIError, match="batches_trace_context_format"), old_db.begin() as c:
        c.execute(text(NEW_BATCH), {"batch_id": "2024-05", "context": "not a traceparent"})


def test_downgrade_drops_the_column_and_keeps_the_rows(old_db: Engine) -> None:
    migrate.upgrade(old_db, AFTER)
    with old_db.begin() as conn:
        conn.execute(text(NEW_BATCH), {"batch_id": "2024-04", "context": TRACEPARENT})
    migrate.downgrade(old_db, BEFORE)
    assert sorted(b for b, _ in batches(old_db)) == ["2024-03", "2024-04"]
    with old_db.connect() as conn:
        columns = conn.execute(
            text("SELECT column_name FROM information_schema.columns WHERE table_name = 'batches'")
        ).scalars()
        assert "trace_context" not in set(columns)
