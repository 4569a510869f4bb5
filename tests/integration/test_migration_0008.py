"""Revision 0008 (the ingestion ledger) on a database holding 0004's schema and file_log rows:
the rows are kept through the upgrade, a DUPLICATE written afterwards survives the downgrade
as a REJECTED row that says what it was, and the enum is back to its five values."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text

from dagrelay.store import migrate

pytestmark = pytest.mark.integration

ROWS = """INSERT INTO file_log (bucket, name, generation, md5, source, status, rows_loaded, error)
VALUES ('b', 'inbox/sales/a.csv', 1, 'x==', 'sales', 'ARCHIVED', 4, NULL),
       ('b', 'inbox/sales/bad.csv', 2, 'y==', 'sales', 'REJECTED', NULL, 'line 2: bad')"""


@pytest.fixture
def old_db(empty_db_url: str) -> Iterator[Engine]:
    engine = create_engine(empty_db_url)
    migrate.upgrade(engine, "0004")
    with engine.begin() as conn:
        conn.execute(text(ROWS))
    yield engine
    engine.dispose()


def rows(db: Engine) -> list[tuple[object, ...]]:
    with db.connect() as conn:
        found = conn.execute(
            text("SELECT name, status::text, rows_loaded, error FROM file_log ORDER BY file_id")
        )
        return [tuple(r) for r in found]


def statuses(db: Engine) -> list[str]:
    with db.connect() as conn:
        return list(
            conn.execute(text("SELECT unnest(enum_range(NULL::file_status))::text")).scalars()
        )


def test_0008_keeps_the_rows_and_downgrades_a_duplicate_to_a_rejection(old_db: Engine) -> None:
    before = rows(old_db)
    migrate.upgrade(old_db, "0008")
    assert rows(old_db) == before
    assert statuses(old_db)[-1] == "DUPLICATE"
    with old_db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO file_log (bucket, name, generation, md5, source, status,"
                " duplicate_of, error) VALUES ('b', 'inbox/sales/copy.csv', 3, 'x==', 'sales',"
                " 'DUPLICATE', 1, 'same content as gs://b/inbox/sales/a.csv#1')"
            )
        )
    migrate.downgrade(old_db, "0004")
    assert rows(old_db) == [
        *before,
        (
            "inbox/sales/copy.csv",
            "REJECTED",
            None,
            "duplicate (same content as file 1): same content as gs://b/inbox/sales/a.csv#1",
        ),
    ]
    assert statuses(old_db) == ["RECEIVED", "VALIDATED", "LOADED", "ARCHIVED", "REJECTED"]
    migrate.upgrade(old_db, "0008")
    assert len(rows(old_db)) == 3
