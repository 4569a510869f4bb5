"""Leases: an expired PROCESSING attempt is concluded by the sweeper, fenced by attempt, so the
zombie's late result is rejected; heartbeats keep a long handler's lease alive."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.engine.core import RunOutcome
from dagrelay.engine.sweeper import Sweeper
from dagrelay.handlers.registry import HandlerContext
from dagrelay.messages import RunTask, StartBatch
from dagrelay.store.outbox import InMemoryPublisher
from tests.conftest import FakeClock
from tests.integration import helpers
from tests.integration.helpers import (
    ALERTS_TOPIC,
    Gate,
    batch_status,
    call_params,
    drive,
    make_engine,
    run_together,
    scalar,
    set_task_columns,
    statuses,
    task_rows,
)

pytestmark = pytest.mark.integration

InsertPipeline = Callable[..., dict[str, int]]
HOOK = "leases"
LEASE_S = 60


@pytest.fixture
def dag(
    db: Engine, publisher: InMemoryPublisher, clock: FakeClock, insert_pipeline: InsertPipeline
) -> Iterator[DagEngine]:
    """z -> child, z runs the test's hook; a 60 s lease; the batch b1 started, z claimable."""
    insert_pipeline("p", {"z": [], "child": ["z"]}, {"z": "python.call"},
                    {"z": call_params("call_hook", hook=HOOK)})  # fmt: skip
    set_task_columns(db, timeout_s=LEASE_S, max_retries=1, retry_delay_s=10, retry_max_delay_s=10)
    engine = make_engine(db, publisher, clock)
    engine.start_batch(StartBatch("p", "b1"))
    publisher.drain()
    yield engine
    helpers.HOOKS.pop(HOOK, None)


def restart_with(dag: DagEngine, db: Engine, publisher: InMemoryPublisher, **columns: Any) -> None:
    """Change the tasks' settings and start b1 again: a batch runs the version it started with."""
    with db.begin() as conn:
        conn.execute(text("DELETE FROM batches WHERE batch_id = 'b1'"))
    set_task_columns(db, **columns)
    dag.start_batch(StartBatch("p", "b1"))
    publisher.drain()


def lease(db: Engine) -> Any:
    return scalar(db, "SELECT lease_expires_at FROM task_log WHERE status = 'PROCESSING'")


def test_claim_sets_the_lease(dag: DagEngine, db: Engine, clock: FakeClock) -> None:
    seen: list[Any] = []
    helpers.HOOKS[HOOK] = lambda ctx: seen.append(lease(db))
    assert dag.run_task(RunTask("b1", "z")) == RunOutcome.SUCCESS
    assert [(s - clock()).total_seconds() for s in seen] == [LEASE_S]
    assert task_rows(db, "b1")["z"]["status"] == "SUCCESS"


@pytest.mark.parametrize(("retries", "concluded"), [(1, "RETRY"), (0, "ERROR")])
def test_zombie_result_after_lease_expiry_is_rejected(
    dag: DagEngine,
    db: Engine,
    clock: FakeClock,
    publisher: InMemoryPublisher,
    retries: int,
    concluded: str,
) -> None:
    restart_with(dag, db, publisher, max_retries=retries)
    swept: list[int] = []

    def hang_past_the_lease(ctx: HandlerContext) -> dict[str, Any]:
        clock.advance(LEASE_S + 1)
        swept.append(Sweeper(dag).expire_leases())  # the sweeper runs while we "hang"
        return {"late": True}

    helpers.HOOKS[HOOK] = hang_past_the_lease
    assert dag.run_task(RunTask("b1", "z")) == RunOutcome.IGNORED

    assert swept == [1]
    row = task_rows(db, "b1")["z"]
    assert (row["status"], row["attempt"], row["output"]) == (concluded, 1, None)
    assert "lease expired (timeout_s=60)" in row["error"]
    child = "UPSTREAM_FAILED" if concluded == "ERROR" else None  # never released by the zombie
    assert statuses(db, "b1").get("child") == child
    assert publisher.drain(helpers.EVENTS_TOPIC) == []
    outcome = scalar(db, "SELECT outcome::text FROM task_attempts WHERE attempt = 1")
    assert outcome == concluded
    assert len(publisher.drain(ALERTS_TOPIC)) == (1 if concluded == "ERROR" else 0)
    assert batch_status(db, "p", "b1") == ("FAILED" if concluded == "ERROR" else "RUNNING")


def test_zombie_cannot_overwrite_the_next_attempt(
    dag: DagEngine, db: Engine, clock: FakeClock, publisher: InMemoryPublisher
) -> None:
    """Attempt 1 hangs (in a thread); the sweeper retries it; attempt 2 runs and succeeds;
    then attempt 1 wakes up and returns: its write is rejected, the child exists once."""
    gate = Gate()
    helpers.HOOKS[HOOK] = lambda ctx: gate(ctx) if ctx.attempt == 1 else {"attempt": 2}
    zombie: list[RunOutcome] = []
    thread = threading.Thread(target=lambda: zombie.append(dag.run_task(RunTask("b1", "z"))))
    thread.start()
    try:
        assert gate.entered.wait(10)
        clock.advance(LEASE_S + 1)
        assert Sweeper(dag).expire_leases() == 1
        clock.advance(11)
        assert Sweeper(dag).relay_outbox(0) == 1
        assert drive(dag, publisher) == [("z", RunOutcome.SUCCESS), ("child", RunOutcome.SUCCESS)]
    finally:
        gate.release.set()
        thread.join(10)
    assert zombie == [RunOutcome.IGNORED]
    row = task_rows(db, "b1")["z"]
    assert (row["status"], row["attempt"], row["output"]) == ("SUCCESS", 2, {"attempt": 2})
    assert scalar(db, "SELECT count(*) FROM task_log") == 2
    assert scalar(db, "SELECT succeeded FROM task_fanin") == 1
    assert publisher.drain() == []
    assert batch_status(db, "p", "b1") == "SUCCESS"


def test_heartbeat_extends_the_lease_and_keeps_a_long_handler_alive(
    dag: DagEngine, db: Engine, clock: FakeClock
) -> None:
    beats: list[tuple[bool, float]] = []
    expired: list[int] = []

    def long_handler(ctx: HandlerContext) -> dict[str, Any]:
        for _ in range(3):
            clock.advance(LEASE_S - 10)
            beats.append((ctx.heartbeat(), (lease(db) - clock()).total_seconds()))
            expired.append(Sweeper(dag).expire_leases())
        return {"done": True}

    helpers.HOOKS[HOOK] = long_handler
    assert dag.run_task(RunTask("b1", "z")) == RunOutcome.SUCCESS
    assert beats == [(True, LEASE_S)] * 3  # 150 s in all, well past the first 60 s lease
    assert expired == [0, 0, 0]
    assert statuses(db, "b1") == {"z": "SUCCESS", "child": "NEW"}


def test_heartbeat_after_the_sweeper_concluded_returns_false(
    dag: DagEngine, db: Engine, clock: FakeClock
) -> None:
    beats: list[bool] = []

    def lose_the_lease(ctx: HandlerContext) -> None:
        beats.append(ctx.heartbeat())
        clock.advance(LEASE_S + 1)
        assert Sweeper(dag).expire_leases() == 1
        beats.append(ctx.heartbeat())

    helpers.HOOKS[HOOK] = lose_the_lease
    assert dag.run_task(RunTask("b1", "z")) == RunOutcome.IGNORED
    assert beats == [True, False]
    assert task_rows(db, "b1")["z"]["status"] == "RETRY"


def test_live_lease_is_not_expired_and_duplicate_is_ignored(
    dag: DagEngine, db: Engine, clock: FakeClock
) -> None:
    inside: list[object] = []

    def duplicate_arrives(ctx: HandlerContext) -> None:
        clock.advance(LEASE_S - 1)
        inside.append(Sweeper(dag).expire_leases())
        inside.append(dag.run_task(RunTask("b1", "z")))  # a redelivery while we run

    helpers.HOOKS[HOOK] = duplicate_arrives
    assert dag.run_task(RunTask("b1", "z")) == RunOutcome.SUCCESS
    assert inside == [0, RunOutcome.IGNORED]
    assert scalar(db, "SELECT count(*) FROM task_attempts") == 1


def test_two_sweepers_expire_one_lease_once(
    dag: DagEngine, db: Engine, clock: FakeClock, publisher: InMemoryPublisher
) -> None:
    restart_with(dag, db, publisher, max_retries=0)
    gate = Gate()
    helpers.HOOKS[HOOK] = gate
    thread = threading.Thread(target=lambda: dag.run_task(RunTask("b1", "z")))
    thread.start()
    try:
        assert gate.entered.wait(10)
        clock.advance(LEASE_S + 1)
        run_together([Sweeper(dag).expire_leases, Sweeper(dag).expire_leases])
    finally:
        gate.release.set()
        thread.join(10)
    assert statuses(db, "b1") == {"z": "ERROR", "child": "UPSTREAM_FAILED"}
    assert scalar(db, "SELECT count(*) FROM outbox WHERE topic = 'dagrelay-alerts'") == 1
    assert len(publisher.drain(ALERTS_TOPIC)) == 1
    assert scalar(db, "SELECT count(*) FROM task_attempts") == 1


def test_lease_expiry_is_recorded_in_the_attempt_history(
    dag: DagEngine, db: Engine, clock: FakeClock
) -> None:
    """Like every failed attempt, an expired one has its error and a non-empty traceback
    (there is no Python stack to show: it should say what the sweeper saw)."""

    def hang(ctx: HandlerContext) -> None:
        clock.advance(LEASE_S + 1)
        Sweeper(dag).expire_leases()

    helpers.HOOKS[HOOK] = hang
    dag.run_task(RunTask("b1", "z"))
    with db.connect() as conn:
        row = conn.execute(
            text("SELECT outcome::text, error, traceback, finished_at FROM task_attempts")
        ).one()
    assert (row.outcome, row.finished_at) == ("RETRY", clock())
    assert "LeaseExpired: lease expired" in row.error
    assert row.traceback, "an expired attempt has an empty traceback"
