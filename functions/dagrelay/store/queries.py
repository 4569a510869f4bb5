"""The named SQL of ``schema/*.sql``, parsed once into SQLAlchemy text clauses.

``queries.sql`` holds every statement that changes state (the state machine); ``reads.sql``
holds the read model's statements (``dagrelay.store.reads``), and the other files their own
concerns. A name may be defined once across all of them."""

from __future__ import annotations

import re
from functools import cache

from sqlalchemy import TextClause, text

from dagrelay.resources import schema_dir

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def parse_queries(source: str) -> dict[str, str]:
    """Split a file of ``-- name: x`` blocks into {name: sql}; a duplicate name is an error."""
    parts = _HEADER.split(source)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = _without_comment_lines(body).strip().rstrip(";")
    return queries


def _without_comment_lines(sql: str) -> str:
    """Whole-line comments go: a ``:word`` in prose must not become a bind parameter."""
    return "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))


@cache
def _all() -> dict[str, TextClause]:
    queries: dict[str, TextClause] = {}
    for path in sorted(schema_dir().glob("*.sql")):
        for name, sql in parse_queries(path.read_text(encoding="utf-8")).items():
            if name in queries:
                raise ValueError(f"query {name!r} is defined twice ({path.name})")
            queries[name] = text(sql)
    return queries


def query(name: str) -> TextClause:
    return _all()[name]
