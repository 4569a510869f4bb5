"""A pool under load: 4 worker threads drive the real engine (router's engine, in-memory
publisher), every message delivered 2-3 times in any order. The pool's limit holds at every
moment (attempt intervals from task_attempts, and the handlers seen running in-process), every
task runs exactly once, and a saturated pool never holds another pool's tasks."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import Engine, text

from dagrelay.engine.pools import set_pool
from dagrelay.messages import StartBatch
from dagrelay.store.outbox import InMemoryPublisher
from tests.integration import pool_harness as harness
from tests.integration.helpers import make_engine, scalar

pytestmark = pytest.mark.integration

InsertPipeline = Callable[..., dict[str, int]]
TASKS, BATCHES, SLOTS, WORKERS = 40, 5, 3, 4


def pooled_pipeline(insert_pipeline: InsertPipeline, db: Engine, name: str, pool: str) -> None:
    names = [f"t{i:02d}" for i in range(TASKS)]
    insert_pipeline(
        name,
        {n: [] for n in names},
        dict.fromkeys(names, "python.call"),
        {n: harness.call("pooled_work", pool=pool) for n in names},
    )
    with db.begin() as conn:
        conn.execute(
            text("UPDATE tasks SET pool = :pool WHERE pipeline = :p"), {"pool": pool, "p": name}
        )


def all_finished(db: Engine) -> Callable[[], bool]:
    return lambda: scalar(db, "SELECT count(*) FROM batches WHERE status = 'RUNNING'") == 0


@pytest.mark.parametrize("seed", [7, 11, 23])
def test_pool_of_3_holds_under_duplicates_and_every_task_runs_once(
    db: Engine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline, seed: int
) -> None:
    pooled_pipeline(insert_pipeline, db, "p", "bq")
    engine = make_engine(db, publisher, harness.wall_clock)
    set_pool(engine, "bq", SLOTS)
    harness.RUNNING.most.clear()
    for b in range(BATCHES):
        engine.start_batch(StartBatch("p", f"b{b}"))
    workers = harness.Workers(engine, publisher, seed)
    workers.run(WORKERS, all_finished(db))

    assert scalar(db, "SELECT count(*) FROM batches WHERE status = 'SUCCESS'") == BATCHES
    runs = scalar(db, "SELECT count(*) FROM task_attempts")
    assert runs == TASKS * BATCHES  # exactly once each: no lost, no doubled attempt
    assert scalar(db, "SELECT count(DISTINCT log_id) FROM task_attempts") == TASKS * BATCHES
    overlap = harness.max_overlap(harness.attempt_intervals(db, "bq"))
    handlers = harness.RUNNING.most["bq"]
    print(f"pool of {SLOTS}: max overlap {overlap} (task_attempts), {handlers} (handlers), "
          f"{workers.deliveries} deliveries {dict(workers.outcomes)}")  # fmt: skip
    # The handlers' own count is the measure: the attempts' history takes its times from the
    # engine's clock, read before a claim waits for the pool's row lock, so under load a claim
    # can be stamped a moment before the end of the attempt whose release it waited for.
    assert harness.RUNNING.most["bq"] <= SLOTS
    assert overlap <= SLOTS + 1
    assert workers.outcomes["QUEUED"] > 0  # the pool was contended: tasks waited in it
    assert scalar(db, "SELECT count(*) FROM task_log WHERE status = 'QUEUED'") == 0
