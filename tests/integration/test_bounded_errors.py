"""Every error stored in a table is bounded by one helper (``dagrelay.bounds.stored_error``),
naming the original size: task_log and task_attempts, file_log (a header of a million columns,
in tests/integration/test_ingest.py), schedules, the outbox, rejected messages and dead
letters."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, text

from dagrelay.bounds import MAX_ERROR_CHARS
from dagrelay.engine.core import RunOutcome
from dagrelay.messages import Envelope, StartBatch
from dagrelay.store import schedules as store_schedules
from dagrelay.store import transitions
from dagrelay.store.outbox import InMemoryPublisher, OutboxRelay, OutgoingMessage
from dagrelay.store.records import DeadLetter, Rejection
from tests.conftest import FakeClock
from tests.integration.helpers import call_params, drive, make_engine

pytestmark = pytest.mark.integration

InsertPipeline = Callable[..., dict[str, int]]
HUGE = 1_000_000
NOW = datetime(2024, 3, 1, tzinfo=UTC)


def assert_bounded(stored: str | None, size: int = HUGE) -> None:
    assert stored is not None
    assert len(stored) <= MAX_ERROR_CHARS, len(stored)
    assert f"cut: {size:,} characters in all" in stored, stored[-80:]


def one(db: Engine, sql: str) -> str | None:
    with db.connect() as conn:
        value: str | None = conn.execute(text(sql)).scalar_one()
        return value


def test_a_huge_handler_error_and_traceback(
    db: Engine, publisher: InMemoryPublisher, clock: FakeClock, insert_pipeline: InsertPipeline
) -> None:
    insert_pipeline("p", {"f": []}, {"f": "python.call"}, {"f": call_params("raise_huge")})
    with db.begin() as conn:
        conn.execute(
            text("UPDATE tasks SET params = jsonb_set(params, '{kwargs}', :k), max_retries = 0"),
            {"k": f'{{"chars": {HUGE}}}'},
        )
    engine = make_engine(db, publisher, clock)
    engine.start_batch(StartBatch("p", "b1"))
    assert drive(engine, publisher) == [("f", RunOutcome.ERROR)]
    size = HUGE + len("ValueError: ")
    assert_bounded(one(db, "SELECT error FROM task_log"), size)
    assert_bounded(one(db, "SELECT error FROM task_attempts"), size)
    traceback = one(db, "SELECT traceback FROM task_attempts")
    assert traceback is not None
    assert len(traceback) <= MAX_ERROR_CHARS
    assert traceback.startswith("[… cut: ")
    assert traceback.endswith("x\n")  # its end is kept


def test_a_huge_schedule_error(db: Engine, insert_pipeline: InsertPipeline) -> None:
    insert_pipeline("p", {"a": []})
    with db.begin() as conn:
        conn.execute(text("INSERT INTO schedules (pipeline, cron) VALUES ('p', '0 6 * * *')"))
        store_schedules.record_error(conn, "p", "e" * HUGE, due=None)
    assert_bounded(one(db, "SELECT last_error FROM schedules"))


def test_a_huge_publish_error(db: Engine, insert_pipeline: InsertPipeline) -> None:
    with db.begin() as conn:
        outbox_id = conn.execute(
            text(
                "INSERT INTO outbox (topic, payload, attributes) "
                "VALUES ('t', '{}'::jsonb, '{}'::jsonb) RETURNING outbox_id"
            )
        ).scalar_one()
    publisher = InMemoryPublisher()
    publisher.fail_with = RuntimeError("p" * HUGE)
    relay = OutboxRelay(db, publisher, lambda: NOW)
    assert relay.send([OutgoingMessage("t", {}, {}, outbox_id)]) == 0
    assert_bounded(one(db, "SELECT last_error FROM outbox"), HUGE + len("RuntimeError('')"))


def test_a_huge_rejection_reason_and_dead_letter(db: Engine) -> None:
    envelope = Envelope(base64.b64encode(b"{}").decode(), {}, "m1")
    rejection = Rejection.of(envelope, "r" * HUGE)
    letter = DeadLetter(Rejection.of(Envelope("e30=", {}, "m2"), "d" * HUGE), "sub", 5)
    with db.begin() as conn:
        assert transitions.record_rejected_message(conn, rejection, now=NOW)
        assert transitions.record_dead_letter(conn, letter, now=NOW)
    assert_bounded(one(db, "SELECT reason FROM rejected_messages"))
    assert_bounded(one(db, "SELECT reason FROM dead_letters"))
