"""A pool of 3 on the local stack: 4 pull worker processes, every run_task published 2-3
times (the Duplicator), 200 tasks across 5 batches. At no moment do more than 3 of the pool's
handlers run (the intervals each handler recorded itself: an attempt's ``started_at`` and
``finished_at`` are its worker's clock read before its claim or result waits for the pool's
lock, so two of them may seem to overlap by those waits), every task's work happens once. And a
pull worker SIGKILLed while it holds a slot: the slot returns after its lease, the queue drains."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest
from sqlalchemy import text

from dagrelay.local.processes import wait_for
from tests.e2e import test_faults
from tests.e2e.faults_helpers import Duplicator
from tests.e2e.test_faults import FaultStack, check, sleep_record
from tests.integration.pool_harness import max_overlap

pytestmark = pytest.mark.e2e

fault_stack = test_faults.fault_stack  # the fixture: a stack of this test's own
TASKS, BATCHES, SLOTS = 40, 5, 3
KILL_TASKS, LEASE_S = 6, 6  # the killed worker's slot comes back after LEASE_S


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
        handlers = conn.execute(text("SELECT started_at, recorded_at FROM effects")).all()
        effects = conn.execute(
            text("SELECT count(*), count(DISTINCT (batch_id, task)) FROM effects")
        ).one()
        workers = conn.execute(text("SELECT count(DISTINCT worker) FROM task_attempts")).scalar()
    overlap = max_overlap([(r[0], r[1]) for r in handlers])
    copies = f"{duplicator.copies} copies of {duplicator.seen} run_task"
    print(f"e2e pool of {SLOTS}: max overlap {overlap}, {len(intervals)} attempts, {copies}, "
          f"{workers} workers")  # fmt: skip
    assert statuses == ["SUCCESS"] * BATCHES
    assert len(intervals) == TASKS * BATCHES  # no attempt lost or doubled
    assert tuple(effects) == (TASKS * BATCHES, TASKS * BATCHES)  # each task's work once
    assert overlap <= SLOTS
    assert duplicator.copies >= duplicator.seen >= TASKS * BATCHES


def test_a_pull_worker_killed_holding_a_slot_gives_it_back_after_its_lease(
    fault_stack: Callable[..., FaultStack],
) -> None:
    """A pool of 1: the worker running its only attempt is SIGKILLed. The slot comes back when
    the sweeper expires the attempt's lease (no message is requeued meanwhile: lost messages
    are swept only after 30 s), the attempt is retried and the queue drains."""
    fs = fault_stack(workers=3, sweep_older_than_s=30)
    names = [f"k{i}" for i in range(KILL_TASKS)]
    fs.define("killed", dict.fromkeys(names, sleep_record(1.0)), {n: [] for n in names},
              timeout_s=LEASE_S)  # fmt: skip
    with fs.db.begin() as conn:
        conn.execute(text("INSERT INTO pools (name, slots) VALUES ('one', 1)"))
        conn.execute(text("UPDATE tasks SET pool = 'one' WHERE pipeline = 'killed'"))
    fs.start_batch("killed", "b1")
    holder: list[str] = []

    def slot_held() -> bool:
        fs.stack.check_alive()
        holder[:] = [
            fs.scalar(
                "SELECT a.worker FROM task_log tl JOIN task_attempts a "
                "ON a.log_id = tl.log_id AND a.attempt = tl.attempt "
                "WHERE tl.status = 'PROCESSING' AND tl.pool = 'one'"
            )
            or ""
        ]
        return bool(holder[0])

    wait_for(slot_held, 60, "an attempt to hold the pool's slot", poll_s=0.05)
    victim = next(p for p in fs.stack.processes if holder[0].endswith(f":{p.pid}"))
    os.killpg(victim.pid, signal.SIGKILL)
    assert victim.popen is not None
    victim.popen.wait(timeout=10)
    fs.stack.processes.remove(victim)  # the stack's liveness check expects it gone

    status = fs.wait_batch("killed", "b1", timeout_s=120)
    result = check(fs, "pull worker SIGKILLed holding a slot", "killed", "b1", status,
                   note=f"pool of 1, lease {LEASE_S} s")  # fmt: skip
    with fs.db.connect() as conn:
        attempts = conn.execute(
            text("SELECT started_at, finished_at, worker, error FROM task_attempts")
        ).all()
    expired = [a for a in attempts if a.worker == holder[0] and "lease expired" in (a.error or "")]
    assert len(expired) == 1, attempts  # the killed attempt ended by its lease, once
    assert len(attempts) == KILL_TASKS + 1  # and was retried; nothing else ran twice
    assert max_overlap([(a.started_at, a.finished_at) for a in attempts]) == 1
    assert len(result.defined) == KILL_TASKS
    assert fs.scalar("SELECT count(*) FROM task_log WHERE status = 'QUEUED'") == 0
