"""Deferred attempts (ARCHITECTURE.md, "States"): a handler whose work goes on elsewhere (a
BigQuery job) returns Deferred; the attempt stays PROCESSING with its job, a poll_task message
waits in the outbox until the poll is due, and the registered poll concludes it, defers again, or
fails."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, RowMapping, text

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.engine.core import RunOutcome
from dagrelay.engine.sweeper import Sweeper
from dagrelay.errors import NonRetryableError
from dagrelay.handlers.registry import Deferred, HandlerContext, HandlerRegistry, default_registry
from dagrelay.messages import PollTask, RunTask, StartBatch
from dagrelay.router.wiring import build_engine
from dagrelay.store.outbox import InMemoryPublisher
from tests.conftest import FakeClock, engine_settings
from tests.integration.helpers import EVENTS_TOPIC, as_run_task

pytestmark = pytest.mark.integration

InsertPipeline = Callable[..., dict[str, int]]


class FakeJobs:
    """A stand-in for BigQuery: a job is submitted once per id and finishes when told to."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.submitted: list[str] = []
        self.polls: list[str] = []
        self.done: dict[str, Mapping[str, Any] | Exception] = {}

    def start(self, ctx: HandlerContext) -> Deferred:
        job_id = f"{ctx.batch_id}-{ctx.task}-{ctx.attempt}"
        with self.lock:
            self.submitted.append(job_id)
        return Deferred({"job_id": job_id}, poll_after_s=10)

    def poll(self, ctx: HandlerContext, job: Mapping[str, Any]) -> Mapping[str, Any] | Deferred:
        job_id = str(job["job_id"])
        with self.lock:
            self.polls.append(job_id)
            result = self.done.get(job_id)
        if result is None:
            return Deferred(job, poll_after_s=30)
        if isinstance(result, Exception):
            raise result
        return result


@pytest.fixture
def jobs() -> FakeJobs:
    return FakeJobs()


@pytest.fixture
def engine(db: Engine, publisher: InMemoryPublisher, clock: FakeClock, jobs: FakeJobs) -> DagEngine:
    registry = HandlerRegistry()
    noop = default_registry.get("python.noop")
    registry.register(noop.name, noop.function, noop.params_schema)
    registry.register("test.job", jobs.start, poll=jobs.poll)
    return build_engine(
        engine_settings(),
        db=db,
        publisher=publisher,
        registry=registry,
        clock=clock,
        rng=random.Random(1),
    )


def row(db: Engine, task: str) -> RowMapping:
    with db.connect() as conn:
        return (
            conn.execute(
                text(
                    "SELECT tl.status::text AS status, tl.attempt, tl.job, tl.poll_at, "
                    "tl.lease_expires_at, tl.output, tl.error FROM task_log tl "
                    "JOIN tasks t USING (task_id) WHERE t.name = :t"
                ),
                {"t": task},
            )
            .mappings()
            .one()
        )


def polls_in_outbox(db: Engine) -> list[tuple[Any, ...]]:
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT payload->>'task', (payload->>'attempt')::int, available_at, "
                "published_at IS NOT NULL FROM outbox WHERE payload->>'action' = 'poll_task' "
                "ORDER BY outbox_id"
            )
        ).all()
    return [tuple(r) for r in rows]


@pytest.fixture
def started(
    engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline
) -> RunTask:
    """load (test.job) -> report (python.noop); load's run_task message, ready to deliver."""
    insert_pipeline("p", {"report": ["load"]}, handlers={"load": "test.job"})
    engine.start_batch(StartBatch("p", "b1"))
    (message,) = publisher.drain(EVENTS_TOPIC)
    return as_run_task(message)


def test_a_deferred_attempt_waits_for_its_poll_and_then_releases_its_children(
    engine: DagEngine,
    publisher: InMemoryPublisher,
    db: Engine,
    clock: FakeClock,
    jobs: FakeJobs,
    started: RunTask,
) -> None:
    assert engine.run_task(started) == RunOutcome.DEFERRED
    deferred = row(db, "load")
    assert deferred["status"] == "PROCESSING"
    assert deferred["job"] == {"job_id": "b1-load-1"}
    assert deferred["poll_at"] == clock.now + timedelta(seconds=10)
    assert deferred["lease_expires_at"] > deferred["poll_at"]  # outlives the poll
    assert publisher.drain(EVENTS_TOPIC) == []  # the poll message is held until due
    assert polls_in_outbox(db) == [("load", 1, deferred["poll_at"], False)]

    clock.advance(40)
    assert Sweeper(engine).relay_outbox(30) == 1  # due + grace: the relay sends it
    (poll,) = [m.payload for m in publisher.drain(EVENTS_TOPIC)]
    message = PollTask(batch_id=poll["batch_id"], task=poll["task"], attempt=poll["attempt"])
    assert engine.poll_task(message) == RunOutcome.DEFERRED  # still running: polled again later

    jobs.done["b1-load-1"] = {"rows": 42}
    clock.advance(31)
    assert engine.poll_task(message) == RunOutcome.SUCCESS
    assert engine.poll_task(message) == RunOutcome.IGNORED  # a duplicate poll does nothing

    done = row(db, "load")
    assert (done["status"], done["output"], done["job"], done["poll_at"]) == (
        "SUCCESS",
        {"rows": 42},
        None,
        None,
    )
    (child,) = publisher.drain(EVENTS_TOPIC)
    assert engine.run_task(as_run_task(child)) == RunOutcome.SUCCESS
    assert jobs.submitted == ["b1-load-1"]  # one job, however many polls
    with db.connect() as conn:
        batch = conn.execute(text("SELECT status::text FROM batches")).scalar_one()
    assert batch == "SUCCESS"


def test_a_failed_job_is_retried_with_a_new_attempt_and_a_new_job(
    engine: DagEngine,
    publisher: InMemoryPublisher,
    db: Engine,
    clock: FakeClock,
    jobs: FakeJobs,
    insert_pipeline: InsertPipeline,
) -> None:
    insert_pipeline("p", {"report": ["load"]}, handlers={"load": "test.job"})
    with db.begin() as conn:  # before the batch starts: its version has the retries
        conn.execute(text("UPDATE tasks SET max_retries = 1, retry_delay_s = 5"))
    engine.start_batch(StartBatch("p", "b1"))
    (message,) = publisher.drain(EVENTS_TOPIC)
    engine.run_task(as_run_task(message))
    jobs.done["b1-load-1"] = RuntimeError("backend error")
    clock.advance(10)

    assert engine.poll_task(PollTask("b1", "load", 1)) == RunOutcome.RETRY
    assert row(db, "load")["job"] is None
    clock.advance(10)
    assert engine.run_task(RunTask("b1", "load")) == RunOutcome.DEFERRED
    assert jobs.submitted == ["b1-load-1", "b1-load-2"]
    assert engine.poll_task(PollTask("b1", "load", 1)) == RunOutcome.IGNORED  # old attempt

    jobs.done["b1-load-2"] = NonRetryableError("invalid query")
    clock.advance(10)
    assert engine.poll_task(PollTask("b1", "load", 2)) == RunOutcome.ERROR
    final = row(db, "load")
    assert final["status"] == "ERROR"
    assert "invalid query" in final["error"]


def test_a_lost_poll_message_is_made_up_by_the_sweeper(
    engine: DagEngine,
    publisher: InMemoryPublisher,
    db: Engine,
    clock: FakeClock,
    jobs: FakeJobs,
    started: RunTask,
) -> None:
    engine.run_task(started)
    jobs.done["b1-load-1"] = {"rows": 1}
    sweeper = Sweeper(engine)

    clock.advance(10 + 59)  # due, but not yet overdue by twice the grace
    assert sweeper.poll_overdue(60) == 0
    clock.advance(2)
    assert sweeper.poll_overdue(60) == 1  # its message was lost: polled directly
    assert row(db, "load")["status"] == "SUCCESS"
    assert jobs.polls == ["b1-load-1"]


def test_a_deferral_whose_lease_expired_is_fenced_off(
    engine: DagEngine, db: Engine, clock: FakeClock, jobs: FakeJobs, started: RunTask
) -> None:
    engine.run_task(started)
    clock.advance(10 + 540 + 1)  # no poll happened: the lease (poll_at + timeout_s) ran out
    assert Sweeper(engine).expire_leases() == 1
    assert row(db, "load")["status"] == "ERROR"  # max_retries = 0
    jobs.done["b1-load-1"] = {"rows": 1}
    assert engine.poll_task(PollTask("b1", "load", 1)) == RunOutcome.IGNORED
    assert row(db, "load")["status"] == "ERROR"


def test_a_handler_that_defers_without_a_poll_fails_clearly(
    db: Engine,
    publisher: InMemoryPublisher,
    clock: FakeClock,
    insert_pipeline: InsertPipeline,
) -> None:
    registry = HandlerRegistry()
    registry.load_plugins([])
    registry.register("test.nopoll", lambda ctx: Deferred({"job_id": "x"}))
    engine = build_engine(
        engine_settings(), db=db, publisher=publisher, registry=registry, clock=clock
    )
    insert_pipeline("p", {"a": []}, handlers={"a": "test.nopoll"})
    engine.start_batch(StartBatch("p", "b1"))
    assert engine.run_task(RunTask("b1", "a")) == RunOutcome.DEFERRED
    clock.advance(10)
    assert engine.poll_task(PollTask("b1", "a", 1)) == RunOutcome.ERROR
    assert "deferred but has no poll" in row(db, "a")["error"]
