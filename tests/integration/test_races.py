"""Races found in review, forced deterministically: one transaction is held open while another
runs into its locks (waited for through pg_stat_activity, not with sleeps)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.engine.core import Failure, RunOutcome
from dagrelay.engine.sweeper import Sweeper
from dagrelay.errors import BadMessage, LeaseExpired
from dagrelay.handlers.registry import Deferred
from dagrelay.local.processes import wait_for
from dagrelay.messages import CancelBatch, RunTask, StartBatch
from dagrelay.states import TaskStatus
from dagrelay.store import transitions as store
from dagrelay.store.outbox import InMemoryPublisher
from dagrelay.store.transitions import Result
from tests.conftest import FakeClock

pytestmark = pytest.mark.integration

InsertPipeline = Callable[..., dict[str, int]]


def status(db: Engine, task: str) -> str | None:
    with db.connect() as conn:
        return conn.execute(
            text(
                "SELECT tl.status::text FROM task_log tl JOIN tasks t USING (task_id) "
                "WHERE t.name = :t"
            ),
            {"t": task},
        ).scalar_one_or_none()


def waiting_on_a_lock(db: Engine) -> bool:
    with db.connect() as conn:
        return bool(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        )


def in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(work())
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_a_rerun_never_removes_a_task_claimed_meanwhile(
    engine: DagEngine, db: Engine, clock: FakeClock, insert_pipeline: InsertPipeline
) -> None:
    insert_pipeline("p", {"b": ["a"]})
    engine.start_batch(StartBatch("p", "b1"))
    assert engine.run_task(RunTask("b1", "a")) == RunOutcome.SUCCESS  # b is NEW
    with db.connect() as conn:
        transaction = conn.begin()
        claim = store.claim(conn, pipeline="p", batch_id="b1", task="b", now=clock(), worker="w1")
        assert claim is not None  # claimed, not yet committed
        thread, result = in_thread(lambda: engine.rerun_tasks("b1", ["a"], downstream=True))
        wait_for(lambda: waiting_on_a_lock(db), 10, "the rerun to wait for the claim")
        transaction.commit()
    thread.join(timeout=10)

    assert isinstance(result[0], BadMessage)
    assert "started meanwhile" in str(result[0])
    assert status(db, "b") == "PROCESSING"  # not removed: the worker's result still lands
    assert engine.conclude(claim.ref, {"ok": True}, None) == RunOutcome.SUCCESS


def test_a_retry_written_while_the_batch_is_cancelled_ends_cancelled(
    engine: DagEngine, db: Engine, clock: FakeClock, insert_pipeline: InsertPipeline
) -> None:
    insert_pipeline("p", {"r": []})
    with db.begin() as conn:
        conn.execute(text("UPDATE tasks SET max_retries = 3"))
    engine.start_batch(StartBatch("p", "b1"))
    with db.begin() as conn:
        claim = store.claim(conn, pipeline="p", batch_id="b1", task="r", now=clock(), worker="w1")
    assert claim is not None
    with db.connect() as conn:
        transaction = conn.begin()
        store.finish_attempt(
            conn,
            ref=claim.ref,
            result=Result(TaskStatus.RETRY, error="flaky", next_attempt_at=clock() + timedelta(60)),
            topic="dagrelay-events",
            alerts_topic="dagrelay-alerts",
            now=clock(),
        )
        thread, result = in_thread(lambda: engine.cancel_batch(CancelBatch("p", "b1")))
        wait_for(lambda: waiting_on_a_lock(db), 10, "the cancel to wait for the retry")
        transaction.commit()
    thread.join(timeout=10)

    (cancelled,) = result
    assert (cancelled.waiting, cancelled.status) == (1, "CANCELLED")  # nothing runs any more
    assert status(db, "r") == "CANCELLED"  # not a RETRY nothing would ever run


def test_children_created_as_the_batch_is_cancelled_are_cancelled(
    engine: DagEngine, db: Engine, clock: FakeClock, insert_pipeline: InsertPipeline
) -> None:
    insert_pipeline("p", {"c": ["a"]})
    engine.start_batch(StartBatch("p", "b1"))
    with db.begin() as conn:
        claim = store.claim(conn, pipeline="p", batch_id="b1", task="a", now=clock(), worker="w1")
    assert claim is not None
    with db.connect() as conn:
        transaction = conn.begin()
        store.finish_attempt(
            conn,
            ref=claim.ref,
            result=Result(TaskStatus.SUCCESS),
            topic="dagrelay-events",
            alerts_topic="dagrelay-alerts",
            now=clock(),
        )
        finished = [store.Transition(claim.ref.task_id, TaskStatus.SUCCESS)]
        store.advance_children(
            conn,
            pipeline="p",
            batch_id="b1",
            finished=finished,
            topic="dagrelay-events",
            now=clock(),
        )
        thread, result = in_thread(lambda: engine.cancel_batch(CancelBatch("p", "b1")))
        wait_for(lambda: waiting_on_a_lock(db), 10, "the cancel to wait for the completion")
        transaction.commit()
    thread.join(timeout=10)

    (cancelled,) = result
    assert (cancelled.waiting, cancelled.never_started, cancelled.status) == (1, 0, "CANCELLED")
    assert status(db, "c") == "CANCELLED"  # created NEW just before: not left waiting forever


def test_the_sweeper_leaves_a_lease_a_heartbeat_renewed(
    engine: DagEngine, db: Engine, clock: FakeClock, insert_pipeline: InsertPipeline
) -> None:
    insert_pipeline("p", {"a": []})
    engine.start_batch(StartBatch("p", "b1"))
    with db.begin() as conn:
        claim = store.claim(conn, pipeline="p", batch_id="b1", task="a", now=clock(), worker="w1")
    assert claim is not None
    clock.advance(541)  # the lease (timeout_s 540) ran out ...
    with db.begin() as conn:
        (expired,) = store.expired_leases(conn, now=clock(), limit=10)
    assert engine.heartbeat(claim.ref)  # ... and the handler renews it before the sweeper acts

    exc = LeaseExpired("lease expired")
    outcome = engine.conclude(expired, None, Failure(exc, str(exc), ""), lease_before=clock())

    assert outcome == RunOutcome.IGNORED
    assert status(db, "a") == "PROCESSING"


def test_a_deferral_is_written_once_per_poll(
    engine: DagEngine,
    publisher: InMemoryPublisher,
    db: Engine,
    clock: FakeClock,
    insert_pipeline: InsertPipeline,
) -> None:
    insert_pipeline("p", {"a": []})
    engine.start_batch(StartBatch("p", "b1"))
    with db.begin() as conn:
        claim = store.claim(conn, pipeline="p", batch_id="b1", task="a", now=clock(), worker="w1")
    assert claim is not None
    deferred = Deferred({"job_id": "j1"}, poll_after_s=10)

    assert engine.conclude(claim.ref, deferred, None) == RunOutcome.DEFERRED
    assert engine.conclude(claim.ref, deferred, None) == RunOutcome.IGNORED  # a repeat

    with db.connect() as conn:
        polls = conn.execute(
            text("SELECT count(*) FROM outbox WHERE payload->>'action' = 'poll_task'")
        ).scalar_one()
    assert polls == 1


def test_a_failing_sweep_step_does_not_stop_the_others(
    engine: DagEngine,
    publisher: InMemoryPublisher,
    db: Engine,
    clock: FakeClock,
    insert_pipeline: InsertPipeline,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    insert_pipeline("p", {"a": [], "z": []})
    publisher.fail_with = RuntimeError("pubsub down")
    engine.start_batch(StartBatch("p", "b1"))  # both run_task messages stay unpublished
    publisher.fail_with = None
    with db.begin() as conn:
        claim = store.claim(conn, pipeline="p", batch_id="b1", task="a", now=clock(), worker="w1")
    assert claim is not None
    clock.advance(600)

    def stuck(*args: Any, **kwargs: Any) -> RunOutcome:
        raise RuntimeError("this attempt cannot be concluded")

    monkeypatch.setattr(engine, "conclude", stuck)
    report = Sweeper(engine).sweep(older_than_s=30)

    assert report.relayed == 2  # the relay still ran after the expiry step failed
    assert status(db, "a") == "PROCESSING"
