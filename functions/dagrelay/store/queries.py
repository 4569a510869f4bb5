"""The named SQL of ``schema/``, parsed once into SQLAlchemy text clauses.

``schema/sql/*.sql`` holds the named SQL, one file per concern: the state machine (batches,
tasks, outbox, sweeper, rerun, pipelines, rejections), the read model (``reads.sql``, used by
``dagrelay.store.reads``), schedules and ingestion's ledger. A name may be defined once across
all of them.

``query(name)`` is the statement as SQLAlchemy runs it; ``rows(conn, name, params)`` runs a
read on either a SQLAlchemy connection or the CLI's plain pg8000 one (``dagrelay.store.direct``),
so the read model has one text per statement whichever connection reads it."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagrelay.resources import schema_dir

if TYPE_CHECKING:
    from sqlalchemy import TextClause

    from dagrelay.store.direct import Reader

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
    from sqlalchemy import text  # noqa: PLC0415 - a read verb reads without SQLAlchemy

    return {name: text(sql) for name, sql in all_queries().items()}


def query(name: str) -> TextClause:
    return _clauses()[name]


def rows(conn: Reader, name: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The rows of the named read as dicts, on whichever connection reads."""
    from dagrelay.store.direct import DirectConnection  # noqa: PLC0415 - pg8000 on first use

    if isinstance(conn, DirectConnection):
        return conn.rows(all_queries()[name], params or {})
    return [dict(r) for r in conn.execute(query(name), params or {}).mappings()]
