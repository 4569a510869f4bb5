"""Connections follow transactions, not tasks (ARCHITECTURE.md, "Capacity"): a router instance
runs many handlers at once on a pool of one connection, none held while a handler runs, and a
thread that cannot get a pooled connection in time fails with an error that says so."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event, text

from dagrelay.config import get_settings, load_settings
from dagrelay.engine.core import Engine as DagEngine
from dagrelay.engine.core import RunOutcome
from dagrelay.errors import PoolExhausted
from dagrelay.handlers.registry import HandlerContext, HandlerRegistry
from dagrelay.messages import StartBatch
from dagrelay.router.wiring import build_engine
from dagrelay.store.db import create_db_engine, get_engine
from dagrelay.store.outbox import InMemoryPublisher
from tests.conftest import FakeClock, engine_settings
from tests.integration.helpers import as_run_task, batch_status, wait_for

pytestmark = pytest.mark.integration

HANDLERS = 20  # tasks running at once on one instance with a single pooled connection


class Gate:
    """A handler that waits at the gate until the test opens it, counting who is inside."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.lock = threading.Lock()
        self.inside = 0

    def __call__(self, context: HandlerContext) -> dict[str, Any]:
        with self.lock:
            self.inside += 1
        assert self.opened.wait(timeout=60), "the test never opened the gate"
        return {"task": context.task}


@pytest.fixture
def one_connection(db_url: str) -> Iterator[Engine]:
    """The function's own engine, as small as it gets: one pooled connection, no overflow."""
    engine = create_db_engine(load_settings(database_url=db_url, db_pool_size=1, db_max_overflow=0))
    yield engine
    engine.dispose()


def gated_engine(
    db: Engine, gate: Gate, publisher: InMemoryPublisher, clock: FakeClock
) -> DagEngine:
    registry = HandlerRegistry(load=False)
    registry.register("test.gate", gate)
    return build_engine(
        engine_settings(), db=db, publisher=publisher, registry=registry, clock=clock
    )


def busy_sessions(db: Engine) -> int:
    """Sessions of this database doing something (a statement, or a transaction left open),
    besides the one asking."""
    with db.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND state <> 'idle'"
                )
            ).scalar_one()
        )


def test_handlers_run_together_while_no_connection_is_held(
    db: Engine,
    one_connection: Engine,
    insert_pipeline: Callable[..., dict[str, int]],
    publisher: InMemoryPublisher,
    clock: FakeClock,
) -> None:
    tasks = [f"t{i:02d}" for i in range(HANDLERS)]
    insert_pipeline("wide", {t: [] for t in tasks}, handlers=dict.fromkeys(tasks, "test.gate"))
    gate = Gate()
    engine = gated_engine(one_connection, gate, publisher, clock)
    engine.start_batch(StartBatch("wide", "b1"))
    messages = [as_run_task(m) for m in publisher.drain()]
    assert len(messages) == HANDLERS

    outcomes: list[RunOutcome] = []
    threads = [
        threading.Thread(target=lambda m=m: outcomes.append(engine.run_task(m))) for m in messages
    ]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: gate.inside == HANDLERS, 30, "every handler to be running")
        # Twenty handlers run; the instance holds no connection, the database sees no session
        # working or idle in a transaction.
        assert one_connection.pool.checkedout() == 0  # type: ignore[attr-defined]
        assert busy_sessions(db) == 0
    finally:
        gate.opened.set()
        for thread in threads:
            thread.join(timeout=60)
    assert outcomes == [RunOutcome.SUCCESS] * HANDLERS
    assert batch_status(db, "wide", "b1") == "SUCCESS"


def test_a_thread_without_a_connection_in_time_gets_a_clear_error(
    db_url: str,
    insert_pipeline: Callable[..., dict[str, int]],
    publisher: InMemoryPublisher,
    clock: FakeClock,
) -> None:
    insert_pipeline("p", {"a": []})
    small = create_db_engine(
        load_settings(database_url=db_url, db_pool_size=1, db_max_overflow=0, db_pool_timeout_s=0.2)
    )
    try:
        engine = gated_engine(small, Gate(), publisher, clock)
        engine.start_batch(StartBatch("p", "b1"))
        (message,) = [as_run_task(m) for m in publisher.drain()]
        with small.connect(), pytest.raises(PoolExhausted) as raised:  # the only connection
            engine.run_task(message)
    finally:
        small.dispose()
    text_of = str(raised.value)
    assert "1 + 0 connections" in text_of
    assert "0.2 s" in text_of
    assert "db_pool_size" in text_of


def test_forgetting_the_process_wide_engine_closes_its_connections(
    monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    """``get_engine.cache_clear()`` disposes the pool it forgets: a pool dropped with idle
    connections would leave their sockets open until the garbage collector finds them, during
    whatever test runs then (once.py, ``close``)."""
    monkeypatch.setenv("DATABASE_URL", db_url)
    get_settings.cache_clear()
    get_engine.cache_clear()
    closed: list[object] = []
    try:
        engine = get_engine()
        event.listen(
            engine.pool, "close", lambda dbapi_connection, _: closed.append(dbapi_connection)
        )
        with engine.connect() as conn:
            opened = conn.connection.dbapi_connection
        assert closed == []  # back in the pool, open

        get_engine.cache_clear()

        assert closed == [opened]
        assert get_engine.cache_info().currsize == 0
    finally:
        get_engine.cache_clear()
        get_settings.cache_clear()
