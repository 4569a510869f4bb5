"""The memoised pg8000 statement rewrite (dagrelay.db) gives exactly what pg8000 computes, for
every named query as SQLAlchemy sends it."""

from __future__ import annotations

import pg8000.legacy as pg8000_legacy
import pytest
from sqlalchemy import Engine, text

from dagrelay.db import memoise_pg8000_statement_rewrite
from dagrelay.queries import parse_queries, query
from dagrelay.resources import schema_dir

pytestmark = pytest.mark.integration


def named_queries() -> list[str]:
    names: list[str] = []
    for path in sorted(schema_dir().glob("*.sql")):
        names += parse_queries(path.read_text("utf-8"))
    return names


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
