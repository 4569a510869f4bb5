"""Database engines: a plain ``postgresql+pg8000://`` URL locally, the Cloud SQL Python
Connector (pg8000, lazy refresh) in GCP. Created once per process and reused."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, TypeVar

import pg8000.converters as pg8000_converters
import pg8000.exceptions as pg8000_exceptions
import pg8000.legacy as pg8000_legacy
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SqlTimeoutError
from sqlalchemy.pool import QueuePool

from dagrelay.config import Settings, get_settings
from dagrelay.errors import ConfigError, DagrelayError, PoolExhausted
from dagrelay.once import process_wide

log = logging.getLogger(__name__)
T = TypeVar("T")


def create_db_engine(settings: Settings | None = None) -> Engine:
    settings = settings or get_settings()
    memoise_pg8000_statement_rewrite()
    pool = {
        "poolclass": TransactionPool,
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout_s,
        "pool_pre_ping": True,
        "pool_recycle": 1800,
    }
    if settings.database_url:
        engine = create_engine(settings.database_url, **pool)
    elif settings.cloud_sql_instance:
        engine = _cloud_sql_engine(settings, pool)
    else:
        raise ConfigError("set DATABASE_URL (local) or DAGRELAY_CLOUD_SQL_INSTANCE (GCP)")
    event.listen(engine, "connect", lambda dbapi_connection, _: fewer_round_trips(dbapi_connection))
    return engine


class TransactionPool(QueuePool):
    """SQLAlchemy's QueuePool, whose checkout timeout says what it means: a connection is
    held only for one of the engine's short transactions, never while a handler runs, so a
    thread that waits ``db_pool_timeout_s`` in vain met more transactions in flight than the
    pool holds (ARCHITECTURE.md, "Capacity")."""

    def _do_get(self) -> Any:
        try:
            return super()._do_get()
        except SqlTimeoutError as exc:
            raise PoolExhausted(self.size(), self._max_overflow, self._timeout) from exc


def _cloud_sql_engine(settings: Settings, pool: dict[str, Any]) -> Engine:
    # Imported only where it is used: local runs never load the connector.
    from google.cloud.sql.connector import Connector  # noqa: PLC0415

    instance = settings.cloud_sql_instance
    if instance is None or settings.db_password is None:
        raise ConfigError("DAGRELAY_DB_PASSWORD is required with cloud_sql_instance")
    connector = Connector(refresh_strategy="lazy", ip_type=settings.db_ip_type)
    password = settings.db_password.get_secret_value()

    def connect() -> Any:
        return connector.connect(
            instance,
            "pg8000",
            user=settings.db_user,
            password=password,
            db=settings.db_name,
        )

    return create_engine("postgresql+pg8000://", creator=connect, **pool)


def memoise_pg8000_statement_rewrite() -> None:
    """pg8000 rewrites every statement's placeholders (``%s`` -> ``$n``) by scanning its text
    character by character in Python on each execute: ~0.85 ms for advance_children, ~1.7 ms of
    client CPU per task completion (profiled with pyinstrument). For the "format" paramstyle
    SQLAlchemy uses, the rewrite depends on the text alone, so it is computed once per distinct
    statement. Idempotent."""
    original = pg8000_legacy.convert_paramstyle
    if getattr(original, "memoised_by_dagrelay", False):
        return

    @lru_cache(maxsize=1024)
    def rewrite(query: str) -> str:
        statement: str = original("format", query, ())[0]
        return statement

    def convert_paramstyle(style: str, query: str, args: Any) -> tuple[str, Any]:
        if style == "format":
            return rewrite(query), args
        result: tuple[str, Any] = original(style, query, args)
        return result

    convert_paramstyle.memoised_by_dagrelay = True  # type: ignore[attr-defined]
    convert_paramstyle.original = original  # type: ignore[attr-defined]
    pg8000_legacy.convert_paramstyle = convert_paramstyle


# Deadlock, serialisation failure: the transaction lost a race; running it again is the cure.
RETRY_SQLSTATES = frozenset({"40P01", "40001"})


def _retry_helps(code: str | None, message: str) -> bool:
    if code in RETRY_SQLSTATES or code == "26000":
        return True
    return code == "0A000" and "cached plan must not change result type" in message


TRANSACTION_CONTROL = frozenset({"begin transaction", "commit", "rollback"})
PREPARED_PER_CONNECTION = 256
# A prepared statement that no longer fits the schema (cached plan must not change result type;
# prepared statement does not exist): forget it; is_transient() lets the transaction run again.
STALE_PREPARED = frozenset({"0A000", "26000"})


def fewer_round_trips(connection: Any) -> None:
    """Make a pg8000 connection cheaper per statement. pg8000 runs every statement with the
    extended protocol in three round trips (Parse, Describe, Bind+Execute, each with a Sync),
    COMMIT included; the engine's transactions are a few statements each, so that was most of
    a task completion's cost (profiled). Here:
    - COMMIT / ROLLBACK / BEGIN go through the simple query protocol: one round trip;
    - a statement with parameters is prepared once per connection (Parse + Describe) and then
      executed by name in one round trip (Bind + Execute + Sync).
    Results, errors and their translation are pg8000's own: only ``execute_unnamed`` is
    wrapped, with the same signature and return value. Idempotent."""
    original = connection.execute_unnamed
    if getattr(original, "fewer_round_trips", False):
        return
    prepared: dict[str, tuple[bytes, Any, Any]] = {}

    def execute_unnamed(statement: str, vals: Any = (), oids: Any = (), stream: Any = None) -> Any:
        if stream is not None or oids:
            return original(statement, vals=vals, oids=oids, stream=stream)
        if not vals and statement in TRANSACTION_CONTROL:
            return connection.execute_simple(statement)
        entry = prepared.get(statement)
        if entry is None:
            if not vals or len(prepared) >= PREPARED_PER_CONNECTION:
                return original(statement, vals=vals, oids=oids, stream=stream)
            entry = connection.prepare_statement(statement, ())
            prepared[statement] = entry
        name, columns, input_funcs = entry
        params = pg8000_converters.make_params(connection.py_types, vals)
        try:
            return connection.execute_named(name, params, columns, input_funcs, statement)
        except pg8000_exceptions.DatabaseError as exc:
            fields = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
            if fields.get("C") in STALE_PREPARED:
                del prepared[statement]
            raise

    execute_unnamed.fewer_round_trips = True  # type: ignore[attr-defined]
    connection.execute_unnamed = execute_unnamed


@process_wide(close=Engine.dispose)
def get_engine() -> Engine:
    """The process-wide engine (one pool, however many request threads ask at once);
    ``get_engine.cache_clear()`` disposes it, closing its connections."""
    return create_db_engine()


class StatementCounter:
    """Counts the SQL statements an engine sends (for tests and benchmarks)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self.statements: list[str] = []

    def _on_execute(self, *args: Any) -> None:
        with self._lock:
            self.count += 1
            self.statements.append(str(args[2]))

    @contextmanager
    def attached(self, engine: Engine) -> Iterator[StatementCounter]:
        event.listen(engine, "before_cursor_execute", self._on_execute)
        try:
            yield self
        finally:
            event.remove(engine, "before_cursor_execute", self._on_execute)


def is_transient(exc: BaseException) -> bool:
    """A driver error another try may fix: the connection was lost or the server restarted.
    Driver errors are translated here and nowhere else. pg8000 can surface a reset socket as a
    bare ConnectionResetError (its first read is outside its own error wrapping), so OS-level
    connection errors anywhere in the cause chain count too; so does a pool with no
    connection free in time (nothing was sent)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return True
        if isinstance(seen, OperationalError | InterfaceError | ConnectionError | PoolExhausted):
            return True
        if isinstance(seen, DBAPIError) and _retry_helps(*database_error(seen)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def retry_transient(
    work: Callable[[], T],
    attempts: int = 3,
    delay_s: float = 0.2,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``work`` (a whole transaction) again when it fails with a transient driver error.
    Only for work whose writes are checked, so that a repeat after an unseen commit is a no-op."""
    for attempt in range(1, attempts + 1):
        try:
            return work()
        except Exception as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            log.warning("transient database error, retrying (%d/%d): %s", attempt, attempts, exc)
            sleep(delay_s * attempt)
    raise AssertionError("unreachable")


def database_error(exc: DBAPIError) -> tuple[str | None, str]:
    """(SQLSTATE, primary message) of a pg8000 error, e.g. a trigger's RAISE."""
    orig: Any = exc.orig
    fields = (
        orig.args[0] if orig is not None and orig.args and isinstance(orig.args[0], dict) else {}
    )
    return fields.get("C"), str(fields.get("M") or orig)


def refused_value(exc: BaseException) -> str | None:
    """Why the database refused a value it was given — a CHECK, a NOT NULL, a string it cannot
    store, a number out of range (SQLSTATE classes 22 and 23) — or None for any other error."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DBAPIError):
            code, message = database_error(seen)
            if code is not None and code[:2] in {"22", "23"}:
                return f"the database refused a value ({code}): {message}"
        if isinstance(seen, UnicodeError):
            return f"a string the database cannot store: {seen}"
        seen = seen.__cause__ or seen.__context__
    return None


MAX_ERROR_CHARS = 2000  # an error stored on a row an operator reads (last_error)


def error_text(exc: BaseException, limit: int = MAX_ERROR_CHARS) -> str:
    """An error as an operator reads it on the row it concerns, at most ``limit`` characters:
    a database error by its SQLSTATE and primary message (not the statement and its values),
    anything else by its type and message."""
    if isinstance(exc, DBAPIError):
        code, message = database_error(exc)
        text = f"database error ({code}): {message}" if code else f"database error: {message}"
    else:
        text = str(exc) if isinstance(exc, DagrelayError) else f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 1] + "…"
