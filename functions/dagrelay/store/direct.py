"""The CLI's read connection: the read model's named statements on a plain pg8000 connection,
without SQLAlchemy (~0.35 s of CPU to import, more than a read verb's whole budget, issue 19).

``reading()`` opens it from a local ``postgresql+pg8000://user[:password]@host[:port]/db`` URL
(``config.database_url``); any other way to the database (a URL with query options, another
driver, the Cloud SQL connector) reads through the process-wide SQLAlchemy engine instead. The
statements are the same text either way (``queries.rows``); pg8000 binds ``:name`` parameters
itself and converts values with the same converters it uses under SQLAlchemy. The transaction
is READ ONLY: the database refuses a write on this connection."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    import pg8000.native
    from sqlalchemy import Connection

SCHEME = "postgresql+pg8000"
DEFAULT_PORT = 5432
# Keyword arguments of pg8000.native.Connection.run: no statement may use them as parameters.
RUN_KEYWORDS = frozenset({"sql", "stream", "types"})


class DirectConnection:
    """A pg8000 connection that runs named reads (see ``queries.rows``)."""

    def __init__(self, native: pg8000.native.Connection) -> None:
        self._native = native

    def rows(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        clash = RUN_KEYWORDS & params.keys()
        if clash:
            raise ValueError(f"parameter names reserved by pg8000: {sorted(clash)}")
        found = self._native.run(sql, **params)
        names = [column["name"] for column in self._native.columns or ()]
        return [dict(zip(names, row, strict=True)) for row in found or ()]


# What the read model reads with: a SQLAlchemy connection, or this module's.
Reader: TypeAlias = "Connection | DirectConnection"


def connect_args(url: str | None) -> dict[str, Any] | None:
    """pg8000's connection arguments for a plain local URL; None for anything else."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme != SCHEME or parts.query or parts.fragment or not parts.username:
        return None
    database = unquote(parts.path.lstrip("/"))
    args: dict[str, Any] = {
        "user": unquote(parts.username),
        "host": parts.hostname or "localhost",
        "port": parts.port or DEFAULT_PORT,
    }
    if database:
        args["database"] = database
    if parts.password is not None:
        args["password"] = unquote(parts.password)
    return args


@contextmanager
def reading() -> Iterator[Reader]:
    """A read-only connection for the CLI's read verbs: plain pg8000 when the URL allows it,
    else a connection of the SQLAlchemy engine."""
    from dagrelay.config import database_url  # noqa: PLC0415 - the light settings path

    args = connect_args(database_url())
    if args is None:
        from dagrelay.store.db import get_engine  # noqa: PLC0415 - SQLAlchemy: the other path

        with get_engine().connect() as conn:
            yield conn
        return
    import pg8000.native  # noqa: PLC0415 - the driver only when it connects

    native = pg8000.native.Connection(**args)
    try:
        native.run("START TRANSACTION READ ONLY")
        yield DirectConnection(native)
    finally:
        native.close()


def driver_error(exc: BaseException) -> tuple[str | None, str] | None:
    """(SQLSTATE, primary message) of an error pg8000 raised on this path (SQLSTATE None: the
    database could not be reached); None for any other exception (SQLAlchemy wraps its own)."""
    import pg8000.exceptions  # noqa: PLC0415

    if isinstance(exc, pg8000.exceptions.DatabaseError):
        fields = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
        if fields.get("C"):
            return str(fields["C"]), str(fields.get("M") or exc)
    if isinstance(exc, pg8000.exceptions.InterfaceError):
        return None, str(exc)
    return None
