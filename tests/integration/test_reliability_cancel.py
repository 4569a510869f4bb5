"""Cancel: nothing new starts, waiting tasks are cancelled, a running task finishes without
releasing children; dead-lettered messages are recorded once."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.engine.core import RunOutcome
from dagrelay.engine.sweeper import Sweeper
from dagrelay.messages import CancelBatch, Envelope, RunTask, StartBatch
from dagrelay.router.dispatch import Router
from dagrelay.store.outbox import InMemoryPublisher
from tests.conftest import FakeClock
from tests.integration import helpers
from tests.integration.helpers import (
    Gate,
    batch_status,
    call_params,
    drive,
    make_engine,
    outbox_rows,
    scalar,
    set_task_columns,
    statuses,
)

pytestmark = pytest.mark.integration

InsertPipeline = Callable[..., dict[str, int]]
HOOK = "cancel"
DEAD_LETTER_TOPIC = "dagrelay-dead-letter"


@pytest.fixture
def dag(
    db: Engine, publisher: InMemoryPublisher, clock: FakeClock, insert_pipeline: InsertPipeline
) -> Iterator[DagEngine]:
    """Roots: slow (runs the hook) -> child; flop (fails, retries); idle (NEW, never delivered)."""
    insert_pipeline(
        "p",
        {"slow": [], "child": ["slow"], "flop": [], "idle": []},
        handlers={"slow": "python.call", "flop": "python.fail"},
        params={"slow": call_params("call_hook", hook=HOOK)},
    )
    set_task_columns(db, timeout_s=60, max_retries=3, retry_delay_s=10, retry_max_delay_s=10)
    engine = make_engine(db, publisher, clock)
    engine.start_batch(StartBatch("p", "b1"))
    publisher.drain()
    assert engine.run_task(RunTask("b1", "flop")) == RunOutcome.RETRY
    yield engine
    helpers.HOOKS.pop(HOOK, None)


def in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(work()))
    thread.start()
    return thread, result


def test_cancel_while_a_task_runs(
    dag: DagEngine, db: Engine, clock: FakeClock, publisher: InMemoryPublisher
) -> None:
    gate = Gate()
    helpers.HOOKS[HOOK] = gate
    thread, result = in_thread(lambda: dag.run_task(RunTask("b1", "slow")))
    try:
        assert gate.entered.wait(10)
        done = dag.cancel_batch(CancelBatch("p", "b1"))
        assert done is not None
        assert (done.running, done.waiting, done.never_started) == (1, 2, 1)
        assert batch_status(db, "p", "b1") == "CANCELLING"  # slow still runs
        assert statuses(db, "b1") == {
            "slow": "PROCESSING", "flop": "CANCELLED", "idle": "CANCELLED", "child": "CANCELLED",
        }  # fmt: skip
    finally:
        gate.release.set()
        thread.join(10)

    assert result == [RunOutcome.SUCCESS]
    assert statuses(db, "b1")["slow"] == "SUCCESS"
    assert statuses(db, "b1")["child"] == "CANCELLED"
    assert batch_status(db, "p", "b1") == "CANCELLED"  # the last attempt ended
    assert [m["task"] for m in outbox_rows(db)] == ["flop", "idle", "slow", "flop"]
    for task in ("idle", "flop", "slow", "child"):  # late or duplicate messages
        assert dag.run_task(RunTask("b1", task)) == RunOutcome.IGNORED
    clock.advance(3600)
    report = Sweeper(dag).sweep(30)
    assert (report.requeued, report.batches_finished) == (0, 0)
    assert drive(dag, publisher) == [("flop", RunOutcome.IGNORED)]  # its held retry, relayed
    assert batch_status(db, "p", "b1") == "CANCELLED"
    assert dag.cancel_batch(CancelBatch("p", "b1")) is None


def test_cancel_of_a_finished_batch_returns_false(
    engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline, db: Engine
) -> None:
    insert_pipeline("p", {"a": []})
    engine.start_batch(StartBatch("p", "b1"))
    drive(engine, publisher)
    assert engine.cancel_batch(CancelBatch("p", "b1")) is None
    assert batch_status(db, "p", "b1") == "SUCCESS"
    assert engine.cancel_batch(CancelBatch("p", "nope")) is None


def test_task_hung_at_cancel_time_leaves_no_open_row(
    dag: DagEngine, db: Engine, clock: FakeClock
) -> None:
    """The sweeper concludes the hung attempt of a cancelled batch; nothing can ever run it
    again, so it must not be left waiting as RETRY."""

    def cancelled_then_hang(ctx: Any) -> None:
        assert dag.cancel_batch(CancelBatch("p", "b1"))
        clock.advance(61)
        assert Sweeper(dag).expire_leases() == 1

    helpers.HOOKS[HOOK] = cancelled_then_hang
    assert dag.run_task(RunTask("b1", "slow")) == RunOutcome.IGNORED
    open_rows = "SELECT count(*) FROM task_log WHERE status IN ('NEW', 'PROCESSING', 'RETRY')"
    assert scalar(db, open_rows) == 0, statuses(db, "b1")


def test_heartbeat_tells_a_running_handler_its_batch_was_cancelled(
    dag: DagEngine, db: Engine
) -> None:
    """HandlerContext.heartbeat: False once the attempt is no longer live ("its lease
    expired, the batch was cancelled"), so a long handler can stop early."""
    beats: list[bool] = []

    def cancelled_while_running(ctx: Any) -> None:
        beats.append(ctx.heartbeat())
        assert dag.cancel_batch(CancelBatch("p", "b1"))
        beats.append(ctx.heartbeat())

    helpers.HOOKS[HOOK] = cancelled_while_running
    dag.run_task(RunTask("b1", "slow"))
    assert beats == [True, False]
    assert statuses(db, "b1")["child"] == "CANCELLED"  # never started, not released either
    assert batch_status(db, "p", "b1") == "CANCELLED"


def envelope(payload: dict[str, Any], message_id: str) -> Envelope:
    data = base64.b64encode(json.dumps(payload).encode()).decode()
    return Envelope(data, {"action": str(payload.get("action"))}, message_id)


def test_router_dispatches_cancel_batch(dag: DagEngine, db: Engine, clock: FakeClock) -> None:
    router = Router(dag, db, clock, dead_letter_topic=DEAD_LETTER_TOPIC)
    cancel = {"action": "cancel_batch", "pipeline": "p", "batch_id": "b1"}
    assert router.handle(envelope(cancel, "m1")) == "cancelled"  # nothing was running
    assert router.handle(envelope(cancel, "m2")) == "not running"
    assert batch_status(db, "p", "b1") == "CANCELLED"
    assert router.handle(envelope({**cancel, "batch_id": "b 1"}, "m3")) == "rejected"
    assert scalar(db, "SELECT count(*) FROM rejected_messages") == 1


def push(payload: dict[str, Any] | None, message_id: str, count: str = "5") -> dict[str, Any]:
    data = "%%%" if payload is None else base64.b64encode(json.dumps(payload).encode()).decode()
    attributes = {
        "CloudPubSubDeadLetterSourceDeliveryCount": count,
        "CloudPubSubDeadLetterSourceSubscription": "projects/p/subscriptions/s",
    }
    return {"message": {"data": data, "attributes": attributes, "messageId": message_id}}


SOURCE = f"//pubsub.googleapis.com/projects/p/topics/{DEAD_LETTER_TOPIC}"


def dead_letters(db: Engine) -> list[dict[str, Any]]:
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT message_id, action, pipeline, batch_id, task, delivery_attempts, "
                "source_subscription, reason FROM dead_letters ORDER BY dead_letter_id"
            )
        ).mappings()
        return [dict(r) for r in rows]


def test_dead_letters_are_recorded_once(
    engine: DagEngine, insert_pipeline: InsertPipeline, db: Engine, clock: FakeClock
) -> None:
    insert_pipeline("p", {"a": []})
    router = Router(engine, db, clock, dead_letter_topic=DEAD_LETTER_TOPIC)
    run = {"action": "run_task", "pipeline": "p", "batch_id": "b1", "task": "a"}

    assert router.handle_push(push(run, "d1"), source=SOURCE) == "dead-lettered"
    assert router.handle_push(push(run, "d1"), source=SOURCE) == "dead-lettered"
    assert router.handle_push(push(None, "d2", count="x"), source=SOURCE) == "dead-lettered"

    rows = dead_letters(db)
    assert [(r["message_id"], r["action"], r["batch_id"], r["task"]) for r in rows] == [
        ("d1", "run_task", "b1", "a"), ("d2", None, None, None),
    ]  # fmt: skip
    assert [r["delivery_attempts"] for r in rows] == [5, None]
    assert rows[0]["source_subscription"] == "projects/p/subscriptions/s"
    assert "after 5 failed deliveries on projects/p/subscriptions/s" in rows[0]["reason"]
    assert "malformed message" in rows[1]["reason"]
    assert scalar(db, "SELECT count(*) FROM batches") == 0  # recorded, not run
    assert scalar(db, "SELECT count(*) FROM rejected_messages") == 0
