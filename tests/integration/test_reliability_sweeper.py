"""The sweeper repairs lost messages, batches left RUNNING, and unpublished outbox rows; each
step writes nothing twice."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import pytest
from sqlalchemy import Engine, text

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.engine.core import RunOutcome
from dagrelay.engine.sweeper import Sweeper
from dagrelay.messages import StartBatch
from dagrelay.store.outbox import InMemoryPublisher, OutgoingMessage
from tests.conftest import FakeClock
from tests.integration import helpers
from tests.integration.helpers import (
    batch_status,
    call_params,
    drive,
    make_engine,
    outbox_rows,
    run_together,
    scalar,
    set_task_columns,
    statuses,
)

pytestmark = pytest.mark.integration

InsertPipeline = Callable[..., dict[str, int]]
OLDER_THAN_S = 30


@pytest.fixture(autouse=True)
def _fresh_flaky_counts() -> None:
    helpers.FLAKY.clear()


def tasks_of(messages: Sequence[OutgoingMessage]) -> list[str]:
    return sorted(str(m.payload["task"]) for m in messages)


def test_lost_message_of_a_new_task_is_requeued_once_it_is_old(
    engine: DagEngine,
    publisher: InMemoryPublisher,
    clock: FakeClock,
    insert_pipeline: InsertPipeline,
    db: Engine,
) -> None:
    insert_pipeline("p", {"a": [], "b": [], "c": ["a", "b"]})
    engine.start_batch(StartBatch("p", "b1"))
    assert tasks_of(publisher.drain()) == ["a", "b"]  # ... and lost
    sweeper = Sweeper(engine)

    clock.advance(OLDER_THAN_S - 1)
    assert sweeper.requeue_stale(OLDER_THAN_S) == 0  # may still be on its way
    clock.advance(1)
    assert sweeper.requeue_stale(OLDER_THAN_S) == 2
    assert sweeper.requeue_stale(OLDER_THAN_S) == 0  # no time passed: nothing twice
    assert tasks_of(publisher.drain()) == ["a", "b"]
    clock.advance(OLDER_THAN_S - 1)
    assert sweeper.requeue_stale(OLDER_THAN_S) == 0  # the requeued ones are young again
    assert [m["task"] for m in outbox_rows(db)] == ["a", "b", "a", "b"]


def test_requeued_messages_complete_the_batch(
    engine: DagEngine,
    publisher: InMemoryPublisher,
    clock: FakeClock,
    insert_pipeline: InsertPipeline,
    db: Engine,
) -> None:
    insert_pipeline("p", {"a": [], "b": ["a"]})
    engine.start_batch(StartBatch("p", "b1"))
    publisher.drain()  # lost
    clock.advance(OLDER_THAN_S + 1)
    report = Sweeper(engine).sweep(OLDER_THAN_S)

    assert (report.requeued, report.relayed, report.batches_finished) == (1, 0, 0)
    assert drive(engine, publisher) == [("a", RunOutcome.SUCCESS), ("b", RunOutcome.SUCCESS)]
    assert [m["task"] for m in outbox_rows(db)] == ["a", "a", "b"]
    assert batch_status(db, "p", "b1") == "SUCCESS"


def test_due_retry_whose_message_was_lost_is_requeued(
    db: Engine, publisher: InMemoryPublisher, clock: FakeClock, insert_pipeline: InsertPipeline
) -> None:
    insert_pipeline("p", {"f": []}, {"f": "python.call"}, {"f": call_params("flaky", fails=1)})
    set_task_columns(db, max_retries=1, retry_delay_s=10, retry_max_delay_s=10)
    engine = make_engine(db, publisher, clock)
    engine.start_batch(StartBatch("p", "b1"))
    assert drive(engine, publisher) == [("f", RunOutcome.RETRY)]
    sweeper = Sweeper(engine)

    assert sweeper.requeue_stale(0) == 0  # not due yet
    clock.advance(11 + OLDER_THAN_S)
    report = sweeper.sweep(OLDER_THAN_S)
    assert (report.relayed, report.requeued) == (1, 0)  # the held message itself, only
    assert tasks_of(publisher.drain()) == ["f"]  # ... and lost
    clock.advance(OLDER_THAN_S - 1)
    assert sweeper.requeue_stale(OLDER_THAN_S) == 0
    clock.advance(1)
    assert sweeper.requeue_stale(OLDER_THAN_S) == 1
    assert drive(engine, publisher) == [("f", RunOutcome.SUCCESS)]
    assert [m["task"] for m in outbox_rows(db)] == ["f", "f", "f"]


@pytest.mark.parametrize(
    ("handler", "expected"), [("python.noop", "SUCCESS"), ("python.fail", "FAILED")]
)
def test_batch_left_running_with_nothing_open_is_finished(
    engine: DagEngine,
    publisher: InMemoryPublisher,
    clock: FakeClock,
    insert_pipeline: InsertPipeline,
    db: Engine,
    handler: str,
    expected: str,
) -> None:
    insert_pipeline("p", {"a": [], "b": ["a"]}, {"a": handler})
    engine.start_batch(StartBatch("p", "b1"))
    drive(engine, publisher)
    assert batch_status(db, "p", "b1") == expected
    with db.begin() as conn:  # the completion that should have finished it crashed
        conn.execute(text("UPDATE batches SET status = 'RUNNING', finished_at = NULL"))
    sweeper = Sweeper(engine)

    assert sweeper.finish_idle_batches(OLDER_THAN_S) == 0  # too young
    clock.advance(OLDER_THAN_S)
    assert sweeper.sweep(OLDER_THAN_S).batches_finished == 1
    assert batch_status(db, "p", "b1") == expected
    assert scalar(db, "SELECT finished_at FROM batches") == clock()
    assert sweeper.sweep(OLDER_THAN_S).batches_finished == 0


def test_batch_with_an_open_task_is_not_finished(
    engine: DagEngine,
    publisher: InMemoryPublisher,
    clock: FakeClock,
    insert_pipeline: InsertPipeline,
    db: Engine,
) -> None:
    insert_pipeline("p", {"a": [], "b": []})
    engine.start_batch(StartBatch("p", "b1"))
    msgs = publisher.drain()
    engine.run_task(helpers.as_run_task(msgs[0]))
    clock.advance(3600)
    assert Sweeper(engine).finish_idle_batches(OLDER_THAN_S) == 0
    assert batch_status(db, "p", "b1") == "RUNNING"
    assert sorted(statuses(db, "b1").values()) == ["NEW", "SUCCESS"]


def test_failed_publish_is_recorded_and_relayed_once_pubsub_is_back(
    engine: DagEngine,
    publisher: InMemoryPublisher,
    clock: FakeClock,
    insert_pipeline: InsertPipeline,
    db: Engine,
) -> None:
    insert_pipeline("p", {"a": [], "b": [], "c": ["a", "b"]})
    publisher.fail_with = RuntimeError("down")
    engine.start_batch(StartBatch("p", "b1"))
    rows = outbox_rows(db)
    assert [(r["published_at"], r["publish_attempts"]) for r in rows] == [(None, 1)] * 2
    assert all("RuntimeError('down')" in r["last_error"] for r in rows)

    clock.advance(OLDER_THAN_S + 1)
    report = Sweeper(engine).sweep(OLDER_THAN_S)  # still down
    assert (report.relayed, report.requeued) == (0, 0)
    assert len(outbox_rows(db)) == 2  # unpublished rows are not requeued

    publisher.fail_with = None
    assert Sweeper(engine).sweep(OLDER_THAN_S).relayed == 2
    rows = outbox_rows(db)
    assert [(r["published_at"], r["last_error"]) for r in rows] == [(clock(), None)] * 2
    assert drive(engine, publisher)[-1] == ("c", RunOutcome.SUCCESS)
    assert batch_status(db, "p", "b1") == "SUCCESS"


def test_a_failed_relay_is_counted_in_the_outbox_row(
    engine: DagEngine,
    publisher: InMemoryPublisher,
    clock: FakeClock,
    insert_pipeline: InsertPipeline,
    db: Engine,
) -> None:
    """The relay's own failed publish must show in publish_attempts / last_error, as the
    engine's does: an operator looks there to see why a batch is stuck."""
    insert_pipeline("p", {"a": []})
    publisher.fail_with = RuntimeError("down")
    engine.start_batch(StartBatch("p", "b1"))
    publisher.fail_with = RuntimeError("still down")
    clock.advance(OLDER_THAN_S + 1)
    assert Sweeper(engine).relay_outbox(OLDER_THAN_S) == 0

    row = outbox_rows(db)[0]
    assert row["published_at"] is None
    assert row["publish_attempts"] == 2
    assert "still down" in row["last_error"]


def test_concurrent_relays_publish_each_row_once(
    engine: DagEngine,
    publisher: InMemoryPublisher,
    clock: FakeClock,
    insert_pipeline: InsertPipeline,
    db: Engine,
) -> None:
    insert_pipeline("p", {f"t{i:02}": [] for i in range(20)})
    publisher.fail_with = RuntimeError("down")
    engine.start_batch(StartBatch("p", "b1"))
    publisher.fail_with = None
    sweepers = [Sweeper(engine) for _ in range(4)]

    relayed = run_together([partial(s.relay_outbox, 0) for s in sweepers])
    assert sum(relayed) == 20
    assert tasks_of(publisher.drain()) == [f"t{i:02}" for i in range(20)]
    assert scalar(db, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0
