"""At-least-once, any order: every message delivered three times, shuffled. Each handler still
runs exactly once and the batch succeeds."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from sqlalchemy import Engine

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.engine.core import RunOutcome
from dagrelay.messages import StartBatch
from dagrelay.store.outbox import InMemoryPublisher
from tests.integration import helpers
from tests.integration.helpers import batch_status, call_params, drive, scalar, statuses

pytestmark = pytest.mark.integration

InsertPipeline = Callable[..., dict[str, int]]
MIDDLE = [f"b{i}" for i in range(1, 9)]
DIAMOND = {"a": [], **{b: ["a"] for b in MIDDLE}, "z": MIDDLE}  # 10 tasks


@pytest.mark.parametrize("seed", [1, 2, 3, 42, 2024])
def test_triple_shuffled_delivery_runs_each_handler_once(
    engine: DagEngine,
    publisher: InMemoryPublisher,
    insert_pipeline: InsertPipeline,
    db: Engine,
    seed: int,
) -> None:
    insert_pipeline(
        "diamond",
        DIAMOND,
        handlers=dict.fromkeys(DIAMOND, "python.call"),
        params=dict.fromkeys(DIAMOND, call_params("record_run")),
    )
    batch = f"seed-{seed}"
    engine.start_batch(StartBatch("diamond", batch))
    outcomes = drive(engine, publisher, copies=3, rng=random.Random(seed))

    assert len(outcomes) == 3 * len(DIAMOND)
    assert sorted(t for t, o in outcomes if o == RunOutcome.SUCCESS) == sorted(DIAMOND)
    assert {helpers.RUNS[(batch, t)] for t in DIAMOND} == {1}
    assert set(statuses(db, batch).values()) == {"SUCCESS"}
    assert batch_status(db, "diamond", batch) == "SUCCESS"
    per_task = scalar(
        db,
        "SELECT array_agg(n ORDER BY n) FROM (SELECT count(*) AS n FROM task_attempts "
        "WHERE outcome = 'SUCCESS' GROUP BY log_id) s",
    )
    assert per_task == [1] * len(DIAMOND)
    assert scalar(db, "SELECT count(*) FROM outbox") == len(DIAMOND)
