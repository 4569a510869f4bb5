"""Cancel means something exact: for every state a task can be in when the cancel arrives, the
task's final state and the batch's; and resume runs exactly what the cancel stopped.

The batch is CANCELLING while attempts run (a running one, a deferred one) and CANCELLED, with
its finish time, when the last one ends; every task that never started ends CANCELLED, whether
it had a row (NEW, RETRY) or not (a child of a NEW task, a child whose parents are running)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from sqlalchemy import Engine, text

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.engine.core import RunOutcome
from dagrelay.errors import BadMessage, NonRetryableError
from dagrelay.handlers.registry import Deferred, HandlerContext, HandlerRegistry
from dagrelay.messages import CancelBatch, PollTask, Resume, RunTask, StartBatch
from dagrelay.router.dispatch import Router
from dagrelay.store import reads
from dagrelay.store.outbox import InMemoryPublisher
from tests.conftest import FakeClock
from tests.integration.helpers import (
    Gate,
    batch_status,
    drive,
    make_engine,
    set_task_columns,
    statuses,
)
from tests.integration.test_reliability_cancel import envelope

pytestmark = pytest.mark.integration

InsertPipeline = Callable[..., dict[str, int]]


class Handlers:
    """The scenario's handlers: ok (records its runs), fail (for good), flaky (retryable),
    gate (blocks until released), job (defers; its poll fails retryably when told to)."""

    def __init__(self) -> None:
        self.gate = Gate()
        self.runs: list[str] = []
        self.job_error: Exception | None = None
        self.registry = HandlerRegistry()
        self.registry.register("t.ok", self.ok)
        self.registry.register("t.fail", self.fail)
        self.registry.register("t.flaky", self.flaky)
        self.registry.register("t.gate", self.gate)
        self.registry.register("t.job", self.job, poll=self.poll)

    def ok(self, ctx: HandlerContext) -> dict[str, Any]:
        self.runs.append(ctx.task)
        return {}

    def fail(self, ctx: HandlerContext) -> None:
        raise NonRetryableError(f"{ctx.task} failed for good")

    def flaky(self, ctx: HandlerContext) -> None:
        raise RuntimeError(f"{ctx.task} failed, may retry")

    def job(self, ctx: HandlerContext) -> Deferred:
        return Deferred({"job_id": ctx.task}, poll_after_s=10)

    def poll(self, ctx: HandlerContext, job: Mapping[str, Any]) -> dict[str, Any]:
        if self.job_error is not None:
            raise self.job_error
        return {"job": job["job_id"]}


@pytest.fixture
def handlers() -> Handlers:
    return Handlers()


@pytest.fixture
def dag(
    db: Engine, publisher: InMemoryPublisher, clock: FakeClock, handlers: Handlers
) -> DagEngine:
    return make_engine(db, publisher, clock, registry=handlers.registry)


def finished_at(db: Engine) -> Any:
    with db.connect() as conn:
        return conn.execute(text("SELECT finished_at FROM batches")).scalar_one()


def shown(db: Engine) -> dict[str, str | None]:
    """What `dagrelay status` and the dashboard read: every task with its status."""
    with db.connect() as conn:
        (batch,) = reads.read_batches(conn, "b1", "p")
    return {t["task"]: t["status"] for t in batch["tasks"]}


EDGES = {
    "new": [], "retry": [], "proc": [], "deferred": [], "done": [], "err": [],
    "after_new": ["new"],  # never created: its parent never ran
    "after_run": ["proc", "deferred"],  # never created: its parents are running
    "after_done": ["done"],  # NEW: released by done
    "after_err": ["err"],  # UPSTREAM_FAILED at birth
}  # fmt: skip
HANDLERS = {
    "retry": "t.flaky", "proc": "t.gate", "deferred": "t.job", "err": "t.fail",
}  # fmt: skip


def test_cancel_in_every_task_state(
    dag: DagEngine,
    db: Engine,
    clock: FakeClock,
    publisher: InMemoryPublisher,
    handlers: Handlers,
    insert_pipeline: InsertPipeline,
) -> None:
    insert_pipeline("p", EDGES, handlers={t: HANDLERS.get(t, "t.ok") for t in EDGES})
    set_task_columns(db, max_retries=3, retry_delay_s=10, retry_max_delay_s=10)
    dag.start_batch(StartBatch("p", "b1"))
    publisher.drain()
    assert dag.run_task(RunTask("b1", "done")) == RunOutcome.SUCCESS
    assert dag.run_task(RunTask("b1", "err")) == RunOutcome.ERROR
    assert dag.run_task(RunTask("b1", "retry")) == RunOutcome.RETRY
    assert dag.run_task(RunTask("b1", "deferred")) == RunOutcome.DEFERRED
    running = threading.Thread(target=lambda: dag.run_task(RunTask("b1", "proc")))
    running.start()
    try:
        assert handlers.gate.entered.wait(10)
        before = shown(db)
        done = dag.cancel_batch(CancelBatch("p", "b1"))
        at_cancel = shown(db)
        status_at_cancel = batch_status(db, "p", "b1")
    finally:
        handlers.gate.release.set()
        running.join(10)

    assert before == {
        "done": "SUCCESS", "err": "ERROR", "retry": "RETRY", "deferred": "PROCESSING",
        "proc": "PROCESSING", "new": "NEW", "after_done": "NEW", "after_err": "UPSTREAM_FAILED",
        "after_new": None, "after_run": None,
    }  # fmt: skip
    assert done is not None
    assert (done.running, done.waiting, done.never_started, done.status) == (
        2, 3, 2, "CANCELLING",
    )  # fmt: skip
    assert status_at_cancel == "CANCELLING"
    assert at_cancel == before | {
        "new": "CANCELLED", "retry": "CANCELLED", "after_done": "CANCELLED",
        "after_new": "CANCELLED", "after_run": "CANCELLED",
    }  # fmt: skip

    # proc ended (SUCCESS) but the deferred job still runs: still CANCELLING, not finished.
    assert statuses(db, "b1")["proc"] == "SUCCESS"
    assert (batch_status(db, "p", "b1"), finished_at(db)) == ("CANCELLING", None)

    # The deferred job fails with retries left: not retried in a cancelled batch.
    handlers.job_error = RuntimeError("job lost")
    clock.advance(10)
    assert dag.poll_task(PollTask("b1", "deferred", attempt=1)) == RunOutcome.CANCELLED
    assert batch_status(db, "p", "b1") == "CANCELLED"
    assert finished_at(db) == clock()
    assert shown(db) == {
        "done": "SUCCESS", "err": "ERROR", "retry": "CANCELLED", "deferred": "CANCELLED",
        "proc": "SUCCESS", "new": "CANCELLED", "after_done": "CANCELLED",
        "after_err": "UPSTREAM_FAILED", "after_new": "CANCELLED", "after_run": "CANCELLED",
    }  # fmt: skip
    clock.advance(3600)  # late and held messages change nothing
    drive(dag, publisher)
    assert batch_status(db, "p", "b1") == "CANCELLED"
    assert handlers.runs == ["done"]  # nothing that was cancelled ran


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        pytest.param([], {"a": "CANCELLED", "b": "CANCELLED"}, id="only NEW and not created"),
        pytest.param(["a"], {"a": "SUCCESS", "b": "CANCELLED"}, id="SUCCESS and NEW"),
        pytest.param(["a", "b"], None, id="already finished"),
    ],
)
def test_cancel_with_nothing_running_is_cancelled_at_once(
    dag: DagEngine,
    db: Engine,
    clock: FakeClock,
    insert_pipeline: InsertPipeline,
    setup: list[str],
    expected: dict[str, str] | None,
) -> None:
    insert_pipeline("p", {"b": ["a"]}, handlers={"a": "t.ok", "b": "t.ok"})
    dag.start_batch(StartBatch("p", "b1"))
    for task in setup:
        dag.run_task(RunTask("b1", task))

    done = dag.cancel_batch(CancelBatch("p", "b1"))

    if expected is None:
        assert done is None
        assert batch_status(db, "p", "b1") == "SUCCESS"
        return
    assert done is not None
    assert done.status == "CANCELLED"
    assert batch_status(db, "p", "b1") == "CANCELLED"
    assert finished_at(db) == clock()
    assert shown(db) == expected


# -- resume --------------------------------------------------------------------------------------


@pytest.fixture
def cancelled(
    dag: DagEngine, db: Engine, handlers: Handlers, insert_pipeline: InsertPipeline
) -> None:
    """a (SUCCESS), c (running at the cancel, then SUCCESS); b (NEW), d (child of a and c, never
    created), e (child of b, never created): CANCELLED."""
    insert_pipeline(
        "p",
        {"a": [], "b": [], "c": [], "d": ["a", "c"], "e": ["b"]},
        handlers={"a": "t.ok", "b": "t.ok", "c": "t.gate", "d": "t.ok", "e": "t.ok"},
    )
    dag.start_batch(StartBatch("p", "b1"))
    assert dag.run_task(RunTask("b1", "a")) == RunOutcome.SUCCESS
    running = threading.Thread(target=lambda: dag.run_task(RunTask("b1", "c")))
    running.start()
    assert handlers.gate.entered.wait(10)
    assert dag.cancel_batch(CancelBatch("p", "b1")) is not None
    with pytest.raises(BadMessage, match="is CANCELLING: its running tasks have not finished"):
        dag.resume(Resume("p", "b1"))
    handlers.gate.release.set()
    running.join(10)
    assert batch_status(db, "p", "b1") == "CANCELLED"
    handlers.runs.clear()


@pytest.mark.usefixtures("cancelled")
def test_resume_runs_exactly_what_never_ran_and_ends_success(
    dag: DagEngine, db: Engine, publisher: InMemoryPublisher, handlers: Handlers
) -> None:
    resumed = dag.resume(Resume("p", "b1"))

    assert (resumed.reset, resumed.started) == (3, 2)  # b and d start; e follows b
    assert batch_status(db, "p", "b1") == "RUNNING"
    drive(dag, publisher)
    assert sorted(handlers.runs) == ["b", "d", "e"]  # a and c kept their success
    assert batch_status(db, "p", "b1") == "SUCCESS"
    assert set(shown(db).values()) == {"SUCCESS"}


@pytest.mark.usefixtures("cancelled")
def test_resume_through_the_router(dag: DagEngine, db: Engine, clock: FakeClock) -> None:
    router = Router(dag, db, clock, dead_letter_topic="dead-letters")
    resume = {"action": "resume", "pipeline": "p", "batch_id": "b1"}
    assert router.handle(envelope(resume, "r1")) == "resumed: 2 tasks started"
    assert router.handle(envelope(resume, "r2")) == "rejected"  # RUNNING now
    with db.connect() as conn:
        reason = conn.execute(text("SELECT reason FROM rejected_messages")).scalar_one()
    assert reason == (
        "batch p/b1 is RUNNING, not CANCELLED: nothing to resume (rerun runs tasks of a "
        "finished batch again)"
    )


def test_resume_keeps_a_failure_that_happened_while_cancelling(
    dag: DagEngine,
    db: Engine,
    publisher: InMemoryPublisher,
    handlers: Handlers,
    insert_pipeline: InsertPipeline,
) -> None:
    """A parent that failed for good while the batch was CANCELLING stays ERROR: on resume its
    child (cancelled before it could be decided) is UPSTREAM_FAILED, not run; the batch FAILED."""

    def cancel_then_fail(ctx: HandlerContext) -> None:
        assert dag.cancel_batch(CancelBatch("p", "b1")) is not None
        raise NonRetryableError("a failed while cancelling")

    handlers.registry.register("t.cancel_then_fail", cancel_then_fail)
    insert_pipeline("p", {"a": [], "b": ["a"]}, handlers={"a": "t.cancel_then_fail", "b": "t.ok"})
    dag.start_batch(StartBatch("p", "b1"))
    assert dag.run_task(RunTask("b1", "a")) == RunOutcome.ERROR
    assert batch_status(db, "p", "b1") == "CANCELLED"

    resumed = dag.resume(Resume("p", "b1"))
    drive(dag, publisher)

    assert (resumed.reset, resumed.started) == (1, 0)
    assert shown(db) == {"a": "ERROR", "b": "UPSTREAM_FAILED"}
    assert handlers.runs == []
    assert batch_status(db, "p", "b1") == "FAILED"


def test_resume_refuses_what_is_not_cancelled(
    dag: DagEngine, insert_pipeline: InsertPipeline
) -> None:
    insert_pipeline("p", {"a": []}, handlers={"a": "t.ok"})
    dag.start_batch(StartBatch("p", "b1"))
    with pytest.raises(BadMessage, match="is RUNNING, not CANCELLED"):
        dag.resume(Resume("p", "b1"))
    dag.run_task(RunTask("b1", "a"))
    with pytest.raises(BadMessage, match="is SUCCESS, not CANCELLED"):
        dag.resume(Resume("p", "b1"))
    with pytest.raises(BadMessage, match="no batch 'b2' in pipeline 'p'"):
        dag.resume(Resume("p", "b2"))
