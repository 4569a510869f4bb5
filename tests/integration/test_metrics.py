"""The operations metrics the sweep logs: computed from the database at the engine's clock."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import pytest
from sqlalchemy import Engine, text

from dagrelay import logs
from dagrelay.engine import metrics
from dagrelay.engine.core import Engine as DagEngine
from dagrelay.engine.sweeper import Sweeper
from dagrelay.messages import StartBatch
from dagrelay.store import transitions as store
from tests.conftest import FakeClock

pytestmark = pytest.mark.integration


def test_in_flight_queued_and_oldest_waits(
    db: Engine,
    engine: DagEngine,
    clock: FakeClock,
    insert_pipeline: Callable[..., dict[str, int]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    insert_pipeline("etl", {"a": [], "b": []})
    with db.begin() as conn:
        conn.execute(text("INSERT INTO pools (name, slots) VALUES ('bq', 1)"))
        conn.execute(text("UPDATE tasks SET pool = 'bq'"))
    engine.start_batch(StartBatch("etl", "b1"))
    with db.begin() as conn:
        for task in ("a", "b"):  # a takes the slot, b waits for it
            store.claim_or_queue(
                conn, pipeline="etl", batch_id="b1", task=task, now=clock(), worker="w"
            )
    clock.advance(90)

    with caplog.at_level(logging.INFO, logger="dagrelay.engine.metrics"):
        Sweeper(engine).sweep()
    state, pool = (json.loads(logs.JsonFormatter().format(r)) for r in caplog.records)
    assert state["metric"] == "dagrelay_state"
    assert state["tasks_in_flight"] == 1
    assert state["tasks_queued"] == 1
    assert state["oldest_queued_s"] == pytest.approx(90)
    assert state["batches_running"] == 1
    assert state["oldest_running_batch_s"] == pytest.approx(90)
    assert state["batches_finished"] == state["batches_failed"] == state["tasks_failed"] == 0
    assert {k: pool[k] for k in ("metric", "pool", "slots", "holders", "queued")} == {
        "metric": "dagrelay_pool",
        "pool": "bq",
        "slots": 1,
        "holders": 1,
        "queued": 1,
    }
    assert pool["oldest_queued_s"] == pytest.approx(90)


def test_recently_finished_batches_and_failures(
    db: Engine,
    engine: DagEngine,
    clock: FakeClock,
    insert_pipeline: Callable[..., dict[str, int]],
) -> None:
    insert_pipeline("etl", {"a": []})
    engine.start_batch(StartBatch("etl", "b1"))
    with db.begin() as conn:
        conn.execute(
            text(
                "UPDATE batches SET status = 'FAILED', finished_at = CAST(:t AS timestamptz)"
                " + interval '300 seconds'"
            ),
            {"t": clock()},
        )
    clock.advance(310)
    state, _ = metrics.collect(db, clock())
    assert state["batches_finished"] == state["batches_failed"] == 1
    assert state["batch_duration_max_s"] == pytest.approx(300)
    assert state["batches_running"] == 0
    clock.advance(metrics.WINDOW.total_seconds())
    assert metrics.collect(db, clock())[0]["batches_finished"] == 0
