"""Blast radius of one in the sweeper and the outbox relay (issue 18): one poisoned row beside a
healthy one — the healthy one is repaired, the poisoned one keeps its error on its row (or in
a log line with its ids, for a batch), and the next sweep goes on. The database refuses the
poisoned row through a trigger the test installs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import pytest
from sqlalchemy import Engine, text

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.engine.sweeper import Sweeper
from dagrelay.local.crashes import CrashInjector, InjectedCrash
from dagrelay.messages import StartBatch
from dagrelay.store.outbox import InMemoryPublisher, OutgoingMessage
from tests.conftest import FakeClock
from tests.integration.helpers import (
    as_run_task,
    batch_status,
    make_engine,
    outbox_rows,
    set_task_columns,
    statuses,
)

pytestmark = pytest.mark.integration

InsertPipeline = Callable[..., dict[str, int]]


def refuse(db: Engine, table: str, event: str, when: str) -> None:
    """A trigger that makes the database refuse a row of ``table`` (``when`` over NEW/OLD)."""
    with db.begin() as conn:
        conn.execute(
            text(
                "CREATE OR REPLACE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql "
                "AS $$ BEGIN RAISE EXCEPTION 'poisoned row refused by a test'; END $$"
            )
        )
        conn.execute(
            text(
                f"CREATE TRIGGER refuse_poison_{table} BEFORE {event} ON {table} "
                f"FOR EACH ROW WHEN ({when}) EXECUTE FUNCTION refuse_poison()"
            )
        )


def task_error(db: Engine, task: str) -> str | None:
    with db.connect() as conn:
        error: str | None = conn.execute(
            text("SELECT tl.error FROM task_log tl JOIN tasks t USING (task_id) WHERE t.name = :t"),
            {"t": task},
        ).scalar_one()
        return error


@pytest.mark.fresh_db  # it adds a trigger of its own
def test_a_lost_message_the_database_refuses_to_requeue_stops_only_its_task(
    engine: DagEngine,
    publisher: InMemoryPublisher,
    clock: FakeClock,
    insert_pipeline: InsertPipeline,
    db: Engine,
) -> None:
    insert_pipeline("p", {"good": [], "poison": []})
    engine.start_batch(StartBatch("p", "b1"))
    publisher.drain()  # ... and lost
    refuse(db, "outbox", "INSERT", "NEW.payload->>'task' = 'poison'")
    clock.advance(60)

    assert Sweeper(engine).requeue_stale(30) == 1
    assert [m.payload["task"] for m in publisher.drain()] == ["good"]
    error = task_error(db, "poison")
    assert error is not None
    assert "sweep could not requeue the task" in error
    assert "poisoned row refused by a test" in error
    assert task_error(db, "good") is None
    assert statuses(db, "b1") == {"good": "NEW", "poison": "NEW"}


@pytest.mark.fresh_db  # it adds a trigger of its own
def test_an_expired_lease_the_database_refuses_to_conclude_stops_only_its_task(
    db: Engine,
    publisher: InMemoryPublisher,
    clock: FakeClock,
    insert_pipeline: InsertPipeline,
) -> None:
    ids = insert_pipeline("p", {"good": [], "poison": []})
    set_task_columns(db, timeout_s=60, max_retries=0)
    crashing = make_engine(db, publisher, clock, hooks=CrashInjector.parse("after_claim:*"))
    crashing.start_batch(StartBatch("p", "b1"))
    for message in publisher.drain("dagrelay-events"):
        with pytest.raises(InjectedCrash):  # claimed, then the function died
            crashing.run_task(as_run_task(message))
    refuse(
        db,
        "task_log",
        "UPDATE",
        f"OLD.status IS DISTINCT FROM NEW.status AND NEW.task_id = {ids['poison']}",
    )
    clock.advance(61)
    engine = make_engine(db, publisher, clock)

    assert Sweeper(engine).expire_leases() == 2
    assert statuses(db, "b1") == {"good": "ERROR", "poison": "PROCESSING"}
    error = task_error(db, "poison")
    assert error is not None
    assert "sweep could not conclude the expired lease" in error
    assert "poisoned row refused by a test" in error


@pytest.mark.fresh_db  # it adds a trigger of its own
def test_a_batch_the_database_refuses_to_finish_stops_only_itself(
    engine: DagEngine,
    publisher: InMemoryPublisher,
    clock: FakeClock,
    insert_pipeline: InsertPipeline,
    db: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    insert_pipeline("p", {"a": []})
    for batch in ("good", "poison"):
        engine.start_batch(StartBatch("p", batch))
    with db.begin() as conn:  # every task ended; the completions crashed before finishing
        conn.execute(
            text("UPDATE task_log SET status = 'SUCCESS', finished_at = :t"), {"t": clock.now}
        )
    refuse(db, "batches", "UPDATE", "NEW.batch_id = 'poison'")
    clock.advance(60)

    with caplog.at_level(logging.ERROR, logger="dagrelay.engine.sweeper"):
        assert Sweeper(engine).finish_idle_batches(30) == 1
    assert batch_status(db, "p", "good") == "SUCCESS"
    assert batch_status(db, "p", "poison") == "RUNNING"
    [record] = [r for r in caplog.records if "could not finish batch" in r.getMessage()]
    assert record.__dict__["batch_id"] == "poison"
    assert "poisoned row refused by a test" in record.getMessage()


class PickyPublisher(InMemoryPublisher):
    """Refuses a whole publish call when one message has an attribute that is not text, as
    google-cloud-pubsub's PublisherClient.publish raises (TypeError) before sending anything."""

    def publish(self, messages: Sequence[OutgoingMessage]) -> list[BaseException | None]:
        for m in messages:
            if not all(isinstance(v, str) for v in m.attributes.values()):
                raise TypeError("All attributes being published to Pub/Sub must be text")
        return super().publish(messages)


def test_one_outbox_row_that_cannot_be_published_stops_only_itself(
    db: Engine, clock: FakeClock, insert_pipeline: InsertPipeline
) -> None:
    insert_pipeline("p", {"good": [], "poison": []})
    publisher = PickyPublisher()
    engine = make_engine(db, publisher, clock)
    publisher.fail_with = RuntimeError("down")
    engine.start_batch(StartBatch("p", "b1"))  # both run_task rows stay in the outbox
    publisher.fail_with = None
    with db.begin() as conn:  # a row Pub/Sub's client refuses
        conn.execute(
            text(
                "UPDATE outbox SET attributes = jsonb_set(attributes, '{action}', '1') "
                "WHERE payload->>'task' = 'poison'"
            )
        )

    assert Sweeper(engine).relay_outbox(0) == 1
    assert [m.payload["task"] for m in publisher.drain()] == ["good"]
    rows = {r["task"]: r for r in outbox_rows(db)}
    assert rows["good"]["published_at"] is not None
    assert rows["good"]["last_error"] is None
    assert rows["poison"]["published_at"] is None
    assert "TypeError" in rows["poison"]["last_error"]
    assert "down" not in rows["poison"]["last_error"]  # its own error, not the others'
