"""dagrelay.store.db's pg8000 tuning: the memoised statement rewrite gives exactly what pg8000
computes, statements are prepared once per connection, and a prepared statement made stale by a
schema change is dropped and retried."""

from __future__ import annotations

import pg8000.legacy as pg8000_legacy
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from dagrelay.store.db import is_transient, memoise_pg8000_statement_rewrite, retry_transient
from dagrelay.store.queries import all_queries, query

pytestmark = pytest.mark.integration


def named_queries() -> list[str]:
    return list(all_queries())


def test_memoised_rewrite_equals_pg8000s_own(db: Engine) -> None:
    memoise_pg8000_statement_rewrite()
    memoised = pg8000_legacy.convert_paramstyle
    original = memoised.original
    for name in named_queries():
        sql = str(query(name).compile(dialect=db.dialect))
        args = ("a", 1)
        assert memoised("format", sql, args) == original("format", sql, args), name
    assert memoised("named", "SELECT :a", {"a": 1}) == original("named", "SELECT :a", {"a": 1})


def test_memoising_twice_wraps_once(db: Engine) -> None:
    memoise_pg8000_statement_rewrite()
    first = pg8000_legacy.convert_paramstyle
    memoise_pg8000_statement_rewrite()
    assert pg8000_legacy.convert_paramstyle is first
    with db.connect() as conn:  # and the driver still works through it
        assert conn.execute(text("SELECT CAST(:x AS int) + 1"), {"x": 41}).scalar_one() == 42


def test_statements_are_prepared_once_per_connection(db: Engine) -> None:
    with db.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        prepares: list[str] = []
        original = raw.prepare_statement

        def counting(statement: str, oids: object) -> object:
            prepares.append(statement)
            return original(statement, oids)

        raw.prepare_statement = counting
        for n in range(5):
            assert conn.execute(text("SELECT CAST(:n AS int) * 2"), {"n": n}).scalar_one() == 2 * n
        conn.commit()
    assert len(prepares) == 1


@pytest.mark.fresh_db  # it creates and alters a table of its own
def test_a_stale_prepared_statement_is_dropped_and_the_retry_works(db: Engine) -> None:
    with db.begin() as conn:
        conn.execute(text("CREATE TABLE probe (a int)"))
        conn.execute(text("INSERT INTO probe VALUES (1)"))
    select = text("SELECT * FROM probe WHERE a = :a")

    def read() -> list[tuple[object, ...]]:
        with db.connect() as conn:
            return [tuple(r) for r in conn.execute(select, {"a": 1})]

    assert read() == [(1,)]
    with db.begin() as conn:  # the cached plan's result type changes under it
        conn.execute(text("ALTER TABLE probe ADD COLUMN b int DEFAULT 7"))

    with pytest.raises(DBAPIError) as info:
        read()
    assert is_transient(info.value)
    assert retry_transient(read, sleep=lambda _: None) == [(1, 7)]
