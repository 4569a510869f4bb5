"""A slot belongs to an attempt and its lease: a worker that dies holding one (a crash at each
point) gives it back when the sweeper expires the lease (injected clock), or, after its
commit, when the relay publishes the release; the queue drains, nothing runs twice. A lowered
slot count holds new claims at once; a saturated pool never holds another pool's tasks."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from sqlalchemy import Engine, text

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.engine.core import RunOutcome
from dagrelay.engine.pools import set_pool
from dagrelay.engine.sweeper import Sweeper
from dagrelay.local.crashes import CrashInjector, CrashPoint, InjectedCrash
from dagrelay.messages import CancelBatch, RunTask, StartBatch
from dagrelay.store.outbox import InMemoryPublisher
from tests.conftest import FakeClock
from tests.integration import helpers
from tests.integration.helpers import (
    Gate,
    as_run_task,
    batch_status,
    call_params,
    drive,
    make_engine,
    scalar,
    statuses,
)
from tests.integration.pool_harness import max_overlap

pytestmark = pytest.mark.integration

InsertPipeline = Callable[..., dict[str, int]]
LEASE_S = 60


def in_pool(db: Engine, pipeline: str, pool: str) -> None:
    with db.begin() as conn:
        conn.execute(
            text(
                "UPDATE tasks SET pool = :pool, timeout_s = :lease, max_retries = 1, "
                "retry_delay_s = 10, retry_max_delay_s = 10 WHERE pipeline = :p"
            ),
            {"pool": pool, "lease": LEASE_S, "p": pipeline},
        )


def in_use(db: Engine, pool: str) -> int:
    return int(
        scalar(
            db,
            "SELECT count(*) FROM task_log WHERE limited AND status = 'PROCESSING' AND pool = :p",
            p=pool,
        )
    )


def settle(engine: DagEngine, publisher: InMemoryPublisher, clock: FakeClock) -> None:
    """Deliver, then let time pass and sweep, until the batch is finished."""
    sweeper = Sweeper(engine)
    for _ in range(20):
        drive(engine, publisher, copies=2)
        if batch_status(engine.db, "p", "b1") != "RUNNING":
            return
        clock.advance(LEASE_S + 1)
        sweeper.sweep(older_than_s=30)
    raise AssertionError(f"the batch did not finish: {statuses(engine.db, 'b1')}")


@pytest.mark.parametrize("point", list(CrashPoint))
def test_a_crash_holding_the_slot_gives_it_back_and_the_queue_drains(
    db: Engine,
    publisher: InMemoryPublisher,
    clock: FakeClock,
    insert_pipeline: InsertPipeline,
    point: CrashPoint,
) -> None:
    insert_pipeline("p", {"a": [], "b": [], "c": []})
    in_pool(db, "p", "bq")
    engine = make_engine(db, publisher, clock, hooks=CrashInjector.parse(f"{point}:a"))
    set_pool(engine, "bq", 0)
    engine.start_batch(StartBatch("p", "b1"))
    for message in sorted(publisher.drain(), key=lambda m: m.payload["task"]):
        assert engine.run_task(as_run_task(message)) == RunOutcome.QUEUED
    set_pool(engine, "bq", 1)
    [release] = publisher.drain()
    assert release.payload["task"] == "a"
    with pytest.raises(InjectedCrash):
        engine.run_task(as_run_task(release))

    if point == CrashPoint.AFTER_COMMIT:  # a finished; b's release waits in the outbox
        assert in_use(db, "bq") == 0
        assert statuses(db, "b1") == {"a": "SUCCESS", "b": "QUEUED", "c": "QUEUED"}
    else:  # the dead worker's attempt still holds the slot, until its lease expires
        assert in_use(db, "bq") == 1
        assert engine.run_task(RunTask(pipeline="p", batch_id="b1", task="b")) == RunOutcome.QUEUED
    settle(engine, publisher, clock)

    assert statuses(db, "b1") == {"a": "SUCCESS", "b": "SUCCESS", "c": "SUCCESS"}
    assert scalar(db, "SELECT count(*) FROM task_attempts WHERE outcome = 'SUCCESS'") == 3
    with db.connect() as conn:
        rows = conn.execute(text("SELECT started_at, finished_at FROM task_attempts")).all()
    assert max_overlap([(r[0], r[1]) for r in rows]) <= 1
    assert in_use(db, "bq") == 0


def test_a_lowered_slot_count_holds_new_claims_at_once(
    db: Engine, publisher: InMemoryPublisher, clock: FakeClock, insert_pipeline: InsertPipeline
) -> None:
    gates = {name: Gate() for name in ("a", "b", "c")}
    for name, gate in gates.items():
        helpers.HOOKS[f"pool-{name}"] = gate
    names = ["a", "b", "c", "d"]
    insert_pipeline(
        "p",
        {n: [] for n in names},
        dict.fromkeys("abc", "python.call"),
        {n: call_params("call_hook", hook=f"pool-{n}") for n in "abc"},
    )
    in_pool(db, "p", "bq")
    engine = make_engine(db, publisher, clock)
    set_pool(engine, "bq", 3)
    engine.start_batch(StartBatch("p", "b1"))
    messages = {m.payload["task"]: as_run_task(m) for m in publisher.drain()}
    threads = [threading.Thread(target=engine.run_task, args=(messages[n],)) for n in "abc"]
    for t in threads:
        t.start()
    for gate in gates.values():
        assert gate.entered.wait(30)
    set_pool(engine, "bq", 1)
    assert engine.run_task(messages["d"]) == RunOutcome.QUEUED
    for name, thread in zip("abc", threads, strict=True):
        assert publisher.drain() == []  # nothing released while the pool is over its count
        gates[name].release.set()
        thread.join(30)
    released = publisher.drain("dagrelay-events")
    assert [m.payload["task"] for m in released] == ["d"]  # released by the last end only
    assert engine.run_task(as_run_task(released[0])) == RunOutcome.SUCCESS
    assert batch_status(db, "p", "b1") == "SUCCESS"
    for name in gates:
        helpers.HOOKS.pop(f"pool-{name}", None)


def test_a_saturated_pool_never_holds_another_pools_tasks(
    db: Engine, publisher: InMemoryPublisher, clock: FakeClock, insert_pipeline: InsertPipeline
) -> None:
    gate = Gate()
    helpers.HOOKS["pool-slow"] = gate
    insert_pipeline(
        "p",
        {"s1": [], "s2": []},
        {"s1": "python.call"},
        {"s1": call_params("call_hook", hook="pool-slow")},
    )
    in_pool(db, "p", "slow")
    insert_pipeline("f", {f"f{i}": [] for i in range(5)})
    in_pool(db, "f", "fast")
    engine = make_engine(db, publisher, clock)
    set_pool(engine, "slow", 1)
    set_pool(engine, "fast", 1)
    engine.start_batch(StartBatch("p", "b1"))
    slow = {m.payload["task"]: as_run_task(m) for m in publisher.drain()}
    holder = threading.Thread(target=engine.run_task, args=(slow["s1"],))
    holder.start()
    assert gate.entered.wait(30)  # s1 holds the slow pool's only slot (and its lease)
    assert engine.run_task(slow["s2"]) == RunOutcome.QUEUED
    engine.start_batch(StartBatch("f", "b1"))
    drive(engine, publisher)  # the fast pool's tasks run while the slow pool stays full
    assert batch_status(db, "f", "b1") == "SUCCESS"
    assert statuses(db, "b1")["s2"] == "QUEUED"
    gate.release.set()
    holder.join(30)
    drive(engine, publisher)
    assert batch_status(db, "p", "b1") == "SUCCESS"
    helpers.HOOKS.pop("pool-slow", None)


def test_max_active_limits_a_task_across_batches(
    db: Engine, publisher: InMemoryPublisher, clock: FakeClock, insert_pipeline: InsertPipeline
) -> None:
    gate = Gate()
    helpers.HOOKS["pool-x"] = gate
    insert_pipeline(
        "p", {"x": []}, {"x": "python.call"}, {"x": call_params("call_hook", hook="pool-x")}
    )
    with db.begin() as conn:
        conn.execute(text("UPDATE tasks SET max_active = 1"))
    engine = make_engine(db, publisher, clock)
    engine.start_batch(StartBatch("p", "b1"))
    engine.start_batch(StartBatch("p", "b2"))
    first, second = (as_run_task(m) for m in publisher.drain())
    holder = threading.Thread(target=engine.run_task, args=(first,))
    holder.start()
    assert gate.entered.wait(30)
    assert engine.run_task(second) == RunOutcome.QUEUED  # x of b1 is running
    assert publisher.drain() == []
    gate.release.set()
    holder.join(30)
    [released] = publisher.drain("dagrelay-events")  # by x of b1's end, in its transaction
    assert (released.payload["batch_id"], released.payload["task"]) == ("b2", "x")
    assert engine.run_task(as_run_task(released)) == RunOutcome.SUCCESS
    assert batch_status(db, "p", "b2") == "SUCCESS"
    helpers.HOOKS.pop("pool-x", None)


def test_a_queue_whose_released_head_was_cancelled_is_released_by_the_sweep(
    db: Engine, publisher: InMemoryPublisher, clock: FakeClock, insert_pipeline: InsertPipeline
) -> None:
    insert_pipeline("p", {"a": []})
    in_pool(db, "p", "bq")
    engine = make_engine(db, publisher, clock)
    set_pool(engine, "bq", 0)
    for batch in ("b1", "b2"):
        engine.start_batch(StartBatch("p", batch))
    for message in sorted(publisher.drain(), key=lambda m: m.payload["batch_id"]):
        assert engine.run_task(as_run_task(message)) == RunOutcome.QUEUED
    set_pool(engine, "bq", 1)
    [head] = publisher.drain()
    assert head.payload["batch_id"] == "b1"
    engine.cancel_batch(CancelBatch("p", "b1"))  # before its released task claimed
    assert engine.run_task(as_run_task(head)) == RunOutcome.IGNORED
    sweeper = Sweeper(engine)
    assert sweeper.sweep(older_than_s=30).requeued == 0  # b2 has not waited long enough
    clock.advance(31)
    assert sweeper.sweep(older_than_s=30).requeued == 1
    drive(engine, publisher)
    assert batch_status(db, "p", "b2") == "SUCCESS"
    assert sweeper.sweep(older_than_s=30).requeued == 0
