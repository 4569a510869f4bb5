"""Retries: exponential backoff held in the outbox until due, non-retryable errors, exhaustion,
the attempt history, and the one alert of a terminal failure."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text

from dagrelay.engine.core import RunOutcome
from dagrelay.engine.retry import RetryPolicy, backoff_delay
from dagrelay.engine.sweeper import Sweeper
from dagrelay.messages import RunTask, StartBatch
from dagrelay.store.outbox import InMemoryPublisher
from tests.conftest import FakeClock
from tests.integration import helpers
from tests.integration.helpers import (
    ALERTS_TOPIC,
    batch_status,
    call_params,
    drive,
    make_engine,
    outbox_rows,
    set_task_columns,
    statuses,
    task_rows,
)

pytestmark = pytest.mark.integration

InsertPipeline = Callable[..., dict[str, int]]


@pytest.fixture(autouse=True)
def _fresh_flaky_counts() -> None:
    helpers.FLAKY.clear()


def attempts(db: Engine, task: str) -> list[dict[str, Any]]:
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT a.attempt, a.outcome::text AS outcome, a.error, a.traceback, a.worker, "
                "a.started_at, a.finished_at FROM task_attempts a "
                "JOIN tasks t ON t.task_id = a.task_id WHERE t.name = :t ORDER BY a.attempt"
            ),
            {"t": task},
        ).mappings()
        return [dict(r) for r in rows]


def test_retry_is_held_in_the_outbox_until_due(
    db: Engine, publisher: InMemoryPublisher, clock: FakeClock, insert_pipeline: InsertPipeline
) -> None:
    insert_pipeline(
        "p",
        {"f": [], "child": ["f"]},
        handlers={"f": "python.call"},
        params={"f": call_params("flaky", fails=1)},
    )
    set_task_columns(db, max_retries=2, retry_delay_s=100, retry_backoff=2, retry_max_delay_s=900)
    engine = make_engine(db, publisher, clock, seed=1)
    start = clock()
    engine.start_batch(StartBatch("p", "b1"))

    assert drive(engine, publisher) == [("f", RunOutcome.RETRY)]
    expected_delay = backoff_delay(RetryPolicy(2, 100, 2, 900), 1, random.Random(1))
    due = scalar_due(db)
    assert abs((due - start).total_seconds() - expected_delay) < 0.001
    retry_row = outbox_rows(db)[-1]
    assert (retry_row["task"], retry_row["available_at"], retry_row["published_at"]) == (
        "f", due, None,
    )  # fmt: skip

    assert engine.run_task(RunTask("b1", "f")) == RunOutcome.IGNORED  # early: not claimed
    assert task_rows(db, "b1")["f"]["attempt"] == 1
    sweeper = Sweeper(engine)
    clock.advance(expected_delay - 1)
    assert sweeper.relay_outbox(0) == 0
    assert sweeper.requeue_stale(0) == 0
    assert publisher.drain() == []

    clock.advance(2)
    assert sweeper.relay_outbox(0) == 1
    assert drive(engine, publisher) == [("f", RunOutcome.SUCCESS), ("child", RunOutcome.SUCCESS)]
    assert helpers.FLAKY[("b1", "f")] == 2
    assert batch_status(db, "p", "b1") == "SUCCESS"


def scalar_due(db: Engine) -> datetime:
    with db.connect() as conn:
        due: datetime = conn.execute(
            text("SELECT next_attempt_at FROM task_log WHERE status = 'RETRY'")
        ).scalar_one()
        return due


def test_backoff_grows_is_capped_and_the_history_is_kept(
    db: Engine, publisher: InMemoryPublisher, clock: FakeClock, insert_pipeline: InsertPipeline
) -> None:
    insert_pipeline("p", {"f": []}, {"f": "python.call"}, {"f": call_params("flaky", fails=3)})
    set_task_columns(db, max_retries=3, retry_delay_s=10, retry_backoff=3, retry_max_delay_s=50)
    engine = make_engine(db, publisher, clock, seed=7)
    engine.start_batch(StartBatch("p", "b1"))
    sweeper = Sweeper(engine)

    delays = []
    for _ in range(3):
        assert drive(engine, publisher) == [("f", RunOutcome.RETRY)]
        delay = (scalar_due(db) - clock()).total_seconds()
        delays.append(delay)
        clock.advance(delay)
        assert sweeper.relay_outbox(0) == 1
    assert drive(engine, publisher) == [("f", RunOutcome.SUCCESS)]

    assert 9 <= delays[0] <= 11
    assert 27 <= delays[1] <= 33
    assert 45 <= delays[2] <= 50  # 90 s capped at 50, jitter never above the cap
    history = attempts(db, "f")
    assert [(a["attempt"], a["outcome"], a["worker"]) for a in history] == [
        (1, "RETRY", "test"), (2, "RETRY", "test"), (3, "RETRY", "test"), (4, "SUCCESS", "test"),
    ]  # fmt: skip
    for n, failed in enumerate(history[:3], start=1):
        assert f"flaky failure {n} of 3" in str(failed["error"])
        assert "RuntimeError" in str(failed["traceback"])
    assert history[3]["error"] is None
    assert all(a["started_at"] and a["finished_at"] for a in history)
    assert history[1]["started_at"] == history[0]["finished_at"] + timedelta(seconds=delays[0])


def test_exhausted_retries_end_in_error_with_exactly_one_alert(
    db: Engine, publisher: InMemoryPublisher, clock: FakeClock, insert_pipeline: InsertPipeline
) -> None:
    insert_pipeline(
        "p",
        {"f": [], "child": ["f"], "grandchild": ["child"]},
        handlers={"f": "python.fail"},
        params={"f": '{"message": "disk on fire"}'},
    )
    set_task_columns(db, max_retries=2, retry_delay_s=5, retry_max_delay_s=5)
    engine = make_engine(db, publisher, clock)
    engine.start_batch(StartBatch("p", "b1"))
    sweeper = Sweeper(engine)

    outcomes = []
    for _ in range(3):
        assert outbox_rows(db, ALERTS_TOPIC) == []
        outcomes += drive(engine, publisher)
        clock.advance(10)
        sweeper.relay_outbox(0)
    assert outcomes == [
        ("f", RunOutcome.RETRY), ("f", RunOutcome.RETRY), ("f", RunOutcome.ERROR),
    ]  # fmt: skip
    assert statuses(db, "b1") == {
        "f": "ERROR", "child": "UPSTREAM_FAILED", "grandchild": "UPSTREAM_FAILED",
    }  # fmt: skip
    assert batch_status(db, "p", "b1") == "FAILED"
    assert [a["outcome"] for a in attempts(db, "f")] == ["RETRY", "RETRY", "ERROR"]

    alerts = publisher.drain(ALERTS_TOPIC)
    assert len(alerts) == 1
    payload = alerts[0].payload
    assert (payload["kind"], payload["batch_id"], payload["task"]) == ("task_failed", "b1", "f")
    assert (payload["attempt"], payload["root_cause"]) == (3, "f")
    assert "HandlerFailure: disk on fire" in payload["error"]

    assert engine.run_task(RunTask("b1", "f")) == RunOutcome.IGNORED
    clock.advance(3600)
    sweeper.sweep(older_than_s=0)
    sweeper.sweep(older_than_s=30)
    assert len(outbox_rows(db, ALERTS_TOPIC)) == 1
    assert outbox_rows(db, ALERTS_TOPIC)[0]["published_at"] is not None
    assert publisher.drain(ALERTS_TOPIC) == []


@pytest.mark.parametrize(
    ("handler", "params", "error"),
    [
        pytest.param("python.fail", '{"retryable": false}', "non-retryable", id="non-retryable"),
        pytest.param("python.fail", '{"bogus": 1}', "params", id="bad-params"),
        pytest.param("python.fail", '{"message": "{nope}"}', "unknown placeholder {nope}",
                     id="unknown-placeholder"),
        pytest.param("python.call", '{"callable": "tests.nowhere:f"}', "cannot import",
                     id="missing-callable"),
        # A row written with plain SQL, past `pipeline validate`: refused before the call.
        pytest.param("python.call", '{"callable": "subprocess.run", "kwargs": {"args": "true"}}',
                     "'subprocess.run' is in the standard library", id="refused-subprocess"),
        pytest.param("python.call", '{"callable": "os.system", "kwargs": {"command": "true"}}',
                     "DAGRELAY_CALL_ALLOWED_PREFIXES", id="refused-os-system"),
        pytest.param("python.call", '{"callable": "dagrelay.store.db:get_engine"}',
                     "inside dagrelay", id="refused-internal"),
    ],
)  # fmt: skip
def test_non_retryable_errors_fail_at_once(
    db: Engine,
    publisher: InMemoryPublisher,
    clock: FakeClock,
    insert_pipeline: InsertPipeline,
    handler: str,
    params: str,
    error: str,
) -> None:
    insert_pipeline("p", {"f": [], "child": ["f"]}, {"f": handler}, {"f": params})
    set_task_columns(db, max_retries=5, retry_delay_s=1)
    engine = make_engine(db, publisher, clock)
    engine.start_batch(StartBatch("p", "b1"))

    assert drive(engine, publisher) == [("f", RunOutcome.ERROR)]
    row = task_rows(db, "b1")["f"]
    assert (row["status"], row["attempt"]) == ("ERROR", 1)
    assert error in row["error"]
    assert [m["task"] for m in outbox_rows(db)] == ["f"]  # no retry message
    assert len(publisher.drain(ALERTS_TOPIC)) == 1
    assert batch_status(db, "p", "b1") == "FAILED"


def test_a_retry_and_upstream_failed_children_raise_no_alert(
    db: Engine, publisher: InMemoryPublisher, clock: FakeClock, insert_pipeline: InsertPipeline
) -> None:
    insert_pipeline("p", {"f": [], "c1": ["f"], "c2": ["f"]}, {"f": "python.fail"})
    set_task_columns(db, max_retries=1, retry_delay_s=5, retry_max_delay_s=5)
    engine = make_engine(db, publisher, clock)
    engine.start_batch(StartBatch("p", "b1"))

    assert drive(engine, publisher) == [("f", RunOutcome.RETRY)]
    assert outbox_rows(db, ALERTS_TOPIC) == []
    clock.advance(6)
    Sweeper(engine).relay_outbox(0)
    assert drive(engine, publisher) == [("f", RunOutcome.ERROR)]
    assert statuses(db, "b1") == {"f": "ERROR", "c1": "UPSTREAM_FAILED", "c2": "UPSTREAM_FAILED"}
    assert [a.payload["task"] for a in publisher.drain(ALERTS_TOPIC)] == ["f"]
