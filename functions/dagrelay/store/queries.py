"""The named SQL of ``schema/``, parsed once into SQLAlchemy text clauses.

``schema/sql/*.sql`` holds the named SQL, one file per concern: the state machine (batches,
tasks, outbox, sweeper, rerun, pipelines, rejections), the read model (``reads.sql``, used by
``dagrelay.store.reads``), schedules and ingestion's ledger. A name may be defined once across
all of them."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

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


def query_files(root: Path | None = None) -> list[Path]:
    """Every file of named SQL: ``schema/sql/*.sql``."""
    return sorted(((root or schema_dir()) / "sql").glob("*.sql"))


@cache
def all_queries() -> dict[str, str]:
    """{name: sql} over every file; a name defined in two files is an error naming both."""
    queries: dict[str, str] = {}
    where: dict[str, str] = {}
    for path in query_files():
        for name, sql in parse_queries(path.read_text(encoding="utf-8")).items():
            if name in queries:
                raise ValueError(f"query {name!r} is defined twice ({where[name]}, {path.name})")
            queries[name], where[name] = sql, path.name
    return queries


@cache
def _clauses() -> dict[str, TextClause]:
    return {name: text(sql) for name, sql in all_queries().items()}


def query(name: str) -> TextClause:
    return _clauses()[name]
