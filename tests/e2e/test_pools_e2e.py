"""A pool of 3 on the local stack: 4 pull worker processes, every run_task published 2-3
times (the Duplicator), 200 tasks across 5 batches. At no moment do more than 3 attempts of
the pool overlap (attempt intervals from task_attempts), every task's work happens once."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import text

from tests.e2e import test_faults
from tests.e2e.faults_helpers import Duplicator
from tests.e2e.test_faults import FaultStack, sleep_record
from tests.integration.pool_harness import max_overlap

pytestmark = pytest.mark.e2e

fault_stack = test_faults.fault_stack  # the fixture: a stack of this test's own
TASKS, BATCHES, SLOTS = 40, 5, 3


def test_pool_of_3_with_4_pull_workers_and_duplicate_delivery(
    fault_stack: Callable[..., FaultStack],
) -> None:
    fs = fault_stack(workers=4, sweep_older_than_s=30)
    names = [f"q{i:02}" for i in range(TASKS)]
    fs.define("pooled", dict.fromkeys(names, sleep_record(0.05)), {n: [] for n in names},
              timeout_s=30)  # fmt: skip
    with fs.db.begin() as conn:
        conn.execute(text("INSERT INTO pools (name, slots) VALUES ('bq', :s)"), {"s": SLOTS})
        conn.execute(text("UPDATE tasks SET pool = 'bq' WHERE pipeline = 'pooled'"))
    duplicator = Duplicator(fs.info, seed=20261201)
    duplicator.start()
    try:
        for b in range(BATCHES):
            fs.start_batch("pooled", f"b{b}")
        statuses = [fs.wait_batch("pooled", f"b{b}", timeout_s=240) for b in range(BATCHES)]
    finally:
        duplicator.stop()
    with fs.db.connect() as conn:
        intervals = conn.execute(text("SELECT started_at, finished_at FROM task_attempts")).all()
        effects = conn.execute(
            text("SELECT count(*), count(DISTINCT (batch_id, task)) FROM effects")
        ).one()
        workers = conn.execute(text("SELECT count(DISTINCT worker) FROM task_attempts")).scalar()
    overlap = max_overlap([(r[0], r[1]) for r in intervals])
    copies = f"{duplicator.copies} copies of {duplicator.seen} run_task"
    print(f"e2e pool of {SLOTS}: max overlap {overlap}, {len(intervals)} attempts, {copies}, "
          f"{workers} workers")  # fmt: skip
    assert statuses == ["SUCCESS"] * BATCHES
    assert len(intervals) == TASKS * BATCHES  # no attempt lost or doubled
    assert tuple(effects) == (TASKS * BATCHES, TASKS * BATCHES)  # each task's work once
    assert overlap <= SLOTS
    assert duplicator.copies >= duplicator.seen >= TASKS * BATCHES
