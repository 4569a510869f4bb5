"""Stopping deferred work (ARCHITECTURE.md, "Deferred work"): a handler registered with a
``cancel`` beside its ``poll`` has its external work stopped when its batch is cancelled (at the
cancel, or by the next poll if that failed) and when its lease expires; a handler without one is
left to finish as before."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
from sqlalchemy import Engine, text

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.engine.core import RunOutcome
from dagrelay.engine.sweeper import Sweeper
from dagrelay.errors import NonRetryableError
from dagrelay.handlers.registry import Deferred, HandlerContext, HandlerRegistry
from dagrelay.messages import CancelBatch, PollTask, RunTask, StartBatch
from dagrelay.store.outbox import InMemoryPublisher
from tests.conftest import FakeClock
from tests.integration.helpers import batch_status, make_engine, set_task_columns, statuses

pytestmark = pytest.mark.integration

InsertPipeline = Callable[..., dict[str, int]]


class Jobs:
    """External jobs: started by the handler, never done unless told, stopped by ``cancel``."""

    def __init__(self) -> None:
        self.stopped: list[tuple[str, int]] = []
        self.polls: list[str] = []
        self.stop_error: Exception | None = None
        self.timeouts: list[int | None] = []
        self.registry = HandlerRegistry(load=False)
        self.registry.register("t.job", self.start, poll=self.poll, cancel=self.cancel)
        self.registry.register("t.plain", self.start, poll=self.poll)  # no cancel
        self.registry.register("t.ok", lambda ctx: {})

    def start(self, ctx: HandlerContext) -> Deferred:
        self.timeouts.append(ctx.timeout_s)
        return Deferred({"job_id": f"{ctx.task}-{ctx.attempt}"}, poll_after_s=10)

    def poll(self, ctx: HandlerContext, job: Mapping[str, Any]) -> Deferred:
        self.polls.append(str(job["job_id"]))
        return Deferred(job, poll_after_s=10)

    def cancel(self, ctx: HandlerContext, job: Mapping[str, Any]) -> None:
        if self.stop_error is not None:
            raise self.stop_error
        self.stopped.append((str(job["job_id"]), ctx.attempt))


@pytest.fixture
def jobs() -> Jobs:
    return Jobs()


@pytest.fixture
def dag(db: Engine, publisher: InMemoryPublisher, clock: FakeClock, jobs: Jobs) -> DagEngine:
    return make_engine(db, publisher, clock, registry=jobs.registry)


def error_of(db: Engine, task: str) -> str | None:
    with db.connect() as conn:
        error: str | None = conn.execute(
            text("SELECT error FROM task_log JOIN tasks USING (task_id) WHERE name = :t"),
            {"t": task},
        ).scalar_one()
    return error


@pytest.fixture
def deferred(dag: DagEngine, db: Engine, insert_pipeline: InsertPipeline) -> None:
    """job (t.job, deferred) -> after; plain (t.plain, deferred, no cancel hook); one retry."""
    insert_pipeline(
        "p", {"after": ["job"], "plain": []}, handlers={"job": "t.job", "plain": "t.plain"}
    )
    set_task_columns(db, max_retries=1, retry_delay_s=1, retry_max_delay_s=1)
    dag.start_batch(StartBatch("p", "b1"))
    assert dag.run_task(RunTask("b1", "job", pipeline="p")) == RunOutcome.DEFERRED
    assert dag.run_task(RunTask("b1", "plain", pipeline="p")) == RunOutcome.DEFERRED


@pytest.mark.usefixtures("deferred")
def test_the_handler_sees_its_task_timeout(jobs: Jobs) -> None:
    assert jobs.timeouts == [540, 540]  # the tasks' default timeout_s


@pytest.mark.usefixtures("deferred")
def test_a_cancel_stops_the_deferred_work_once_and_the_attempt_ends_cancelled(
    dag: DagEngine, db: Engine, clock: FakeClock, jobs: Jobs
) -> None:
    dag.cancel_batch(CancelBatch("p", "b1"))

    assert jobs.stopped == [("job-1", 1)]
    assert statuses(db, "b1") == {"job": "CANCELLED", "after": "CANCELLED", "plain": "PROCESSING"}
    assert "batch was cancelled" in (error_of(db, "job") or "")
    # The poll already in the outbox arrives later: the attempt is no longer deferred.
    clock.advance(10)
    assert dag.poll_task(PollTask("b1", "job", attempt=1, pipeline="p")) == RunOutcome.IGNORED
    assert jobs.stopped == [("job-1", 1)]
    assert jobs.polls == []
    # A handler without a cancel is polled as before until its work ends.
    assert dag.poll_task(PollTask("b1", "plain", attempt=1, pipeline="p")) == RunOutcome.DEFERRED
    assert jobs.polls == ["plain-1"]
    assert batch_status(db, "p", "b1") == "CANCELLING"


@pytest.mark.usefixtures("deferred")
def test_a_stop_that_failed_at_the_cancel_is_done_by_the_next_poll(
    dag: DagEngine, db: Engine, clock: FakeClock, jobs: Jobs
) -> None:
    jobs.stop_error = RuntimeError("the jobs API is unavailable")
    dag.cancel_batch(CancelBatch("p", "b1"))
    assert statuses(db, "b1")["job"] == "PROCESSING"  # still deferred: tried again later

    jobs.stop_error = None
    clock.advance(10)
    assert dag.poll_task(PollTask("b1", "job", attempt=1, pipeline="p")) == RunOutcome.CANCELLED
    assert jobs.stopped == [("job-1", 1)]
    assert jobs.polls == []  # a cancelled batch's job is stopped, not polled


@pytest.mark.usefixtures("deferred")
def test_a_stop_that_can_never_work_gives_up_and_says_so(
    dag: DagEngine, db: Engine, jobs: Jobs
) -> None:
    jobs.stop_error = NonRetryableError("permission denied on the job")
    dag.cancel_batch(CancelBatch("p", "b1"))

    assert statuses(db, "b1")["job"] == "CANCELLED"
    assert "permission denied on the job" in (error_of(db, "job") or "")


@pytest.mark.usefixtures("deferred")
def test_an_expired_lease_stops_the_deferred_work_before_the_retry(
    dag: DagEngine, db: Engine, clock: FakeClock, jobs: Jobs
) -> None:
    clock.advance(10 + 540 + 1)  # past poll_at + timeout_s: the polls were lost
    jobs.stop_error = RuntimeError("transient")
    assert Sweeper(dag).expire_leases() == 2
    assert statuses(db, "b1")["job"] == "PROCESSING"  # not concluded until stopped
    assert statuses(db, "b1")["plain"] == "RETRY"  # no hook: concluded at once

    jobs.stop_error = None
    assert Sweeper(dag).expire_leases() == 1
    assert jobs.stopped == [("job-1", 1)]
    assert statuses(db, "b1")["job"] == "RETRY"
    assert "lease expired" in (error_of(db, "job") or "")
