"""The rejection tables after migration 0007 (tested on a database holding old rows), and the
identifier rules: the database's CHECK constraints say what names.schema.json says."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text

from dagrelay import names, schemas
from dagrelay.store import migrate

pytestmark = pytest.mark.integration

BIG = "QUJD" * 30_000  # 120,000 characters of base64, as 0001-0004 stored it whole


@pytest.fixture
def empty_db(empty_db_url: str) -> Iterator[Engine]:
    engine = create_engine(empty_db_url)
    yield engine
    engine.dispose()


def before_0007() -> str:
    revisions = migrate.revisions()
    return revisions[revisions.index("0007") - 1]


def insert_old_rows(db: Engine) -> None:
    with db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO rejected_messages (message_id, attributes, data, reason) VALUES "
                "('1', '{\"a\": \"b\"}', :big, 'too large'), ('2', '{}', NULL, 'no data')"
            ),
            {"big": BIG},
        )
        conn.execute(
            text("INSERT INTO dead_letters (message_id, data, reason) VALUES ('9', 'e30=', 'dl')")
        )


def test_0007_keeps_old_rows_bounded_with_size_and_hash(empty_db: Engine) -> None:
    migrate.upgrade(empty_db, before_0007())
    insert_old_rows(empty_db)
    migrate.upgrade(empty_db, "0007")
    with empty_db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT message_id, attributes, length(data) AS chars, payload_bytes, "
                "payload_sha256, reason FROM rejected_messages ORDER BY message_id"
            )
        ).all()
        letter = conn.execute(text("SELECT payload_bytes, payload_sha256 FROM dead_letters")).one()
    assert [(r.message_id, r.attributes, r.chars, r.reason) for r in rows] == [
        ("1", {"a": "b"}, 65_536, "too large"),
        ("2", {}, None, "no data"),
    ]
    assert (rows[0].payload_bytes, rows[0].payload_sha256) == (
        len(BIG),
        hashlib.sha256(BIG.encode()).hexdigest(),
    )
    assert (rows[1].payload_bytes, rows[1].payload_sha256) == (0, hashlib.sha256(b"").hexdigest())
    assert letter == (4, hashlib.sha256(b"e30=").hexdigest())


def test_0007_downgrade_keeps_the_first_row_of_a_reused_id(empty_db: Engine) -> None:
    migrate.upgrade(empty_db, "0007")
    with empty_db.begin() as conn:
        for data in ("first", "second"):
            conn.execute(
                text(
                    "INSERT INTO rejected_messages (message_id, data, payload_bytes, "
                    "payload_sha256, reason) VALUES ('5', :d, 1, :h, :d)"
                ),
                {"d": data, "h": hashlib.sha256(data.encode()).hexdigest()},
            )
    migrate.downgrade(empty_db, before_0007())
    with empty_db.connect() as conn:
        assert conn.execute(text("SELECT reason FROM rejected_messages")).scalars().all() == [
            "first"
        ]
    migrate.upgrade(empty_db, "head")


CHECKS = {
    "tasks_name_format": names.NAME_PATTERN,
    "tasks_pipeline_format": names.NAME_PATTERN,
    "batches_batch_id_format": names.BATCH_ID_PATTERN,
}
SAMPLES = [
    "a", "A1", "2024-03", "2024-03\n", "a\n", "\na", "a b", "_a", "a" * 128, "a" * 129, "",
    "x:y=z+1", "ü", "\u00b2", "a.b-c_d", "-a", "1a",
]  # fmt: skip


@pytest.mark.parametrize(("constraint", "pattern"), CHECKS.items())
def test_database_checks_are_the_names_rules(db: Engine, constraint: str, pattern: str) -> None:
    with db.connect() as conn:
        definition = conn.execute(
            text("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = :c"),
            {"c": constraint},
        ).scalar_one()
        found = re.search(r"~ '(.*)'::text", definition)
        assert found is not None, definition
        assert found.group(1) == pattern
        in_db = conn.execute(
            text("SELECT s, s ~ :p FROM unnest(CAST(:s AS text[])) AS s"),
            {"p": pattern, "s": SAMPLES},
        ).all()
    assert dict(in_db) == {s: schemas.matches(pattern, s) for s in SAMPLES}, json.dumps(SAMPLES)
