"""Crash injection: the process dies at each crash point of one task's first attempt; redelivery
and the sweeper finish the batch, every side effect happens once, nothing is created twice."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from functools import partial

import pytest
from sqlalchemy import Engine, text

from dagrelay.engine.sweeper import Sweeper
from dagrelay.local.crashes import CrashInjector, CrashPoint
from dagrelay.messages import StartBatch
from dagrelay.store.outbox import InMemoryPublisher
from tests.conftest import FakeClock
from tests.integration.helpers import (
    CRASH,
    EFFECTS_DDL,
    batch_status,
    call_params,
    drive_faulty,
    make_engine,
    outbox_rows,
    scalar,
    set_task_columns,
    settle,
    statuses,
    task_rows,
)

pytestmark = pytest.mark.integration

InsertPipeline = Callable[..., dict[str, int]]
DAG = {"a": [], "b": ["a"], "c": ["b"], "d": ["a"]}  # a -> b -> c, a -> d
BATCH = ("p", "b1")


@pytest.fixture
def effects_dag(db: Engine, db_url: str, insert_pipeline: InsertPipeline) -> Iterator[None]:
    """DAG where every task's handler writes one effects row (batch, task, attempt). The
    effects table is dropped afterwards: the database is shared with the next test."""
    with db.begin() as conn:
        conn.execute(text(EFFECTS_DDL))
    effect = call_params("record_effect", db_url=db_url)
    insert_pipeline("p", DAG, dict.fromkeys(DAG, "python.call"), dict.fromkeys(DAG, effect))
    set_task_columns(db, timeout_s=60, max_retries=2, retry_delay_s=10, retry_max_delay_s=10)
    yield
    with db.begin() as conn:
        conn.execute(text("DROP TABLE effects"))


def effects(db: Engine) -> list[tuple[str, int]]:
    with db.connect() as conn:
        rows = conn.execute(text("SELECT task, attempt FROM effects ORDER BY task, attempt"))
        return [(r.task, r.attempt) for r in rows]


def assert_each_effect_once(db: Engine) -> None:
    """Exactly one effect for each task's successful attempt; none twice for an attempt."""
    done = {name: row["attempt"] for name, row in task_rows(db, "b1").items()}
    recorded = effects(db)
    assert len(recorded) == len(set(recorded)), recorded
    for task, attempt in done.items():
        assert recorded.count((task, attempt)) == 1, (task, recorded)


def assert_fanin_complete(db: Engine) -> None:
    with db.connect() as conn:
        rows = conn.execute(text("SELECT parents, succeeded, failed FROM task_fanin")).all()
    assert [(r.parents, r.failed) for r in rows] == [(1, 0)] * 3
    assert all(r.succeeded == r.parents for r in rows)


@pytest.mark.parametrize("task", ["a", "b", "c"])
@pytest.mark.parametrize("point", list(CrashPoint))
def test_crash_at_each_point_loses_nothing_and_does_nothing_twice(
    db: Engine,
    publisher: InMemoryPublisher,
    clock: FakeClock,
    effects_dag: None,
    point: CrashPoint,
    task: str,
) -> None:
    crashes = CrashInjector.parse(f"{point}:{task}")
    engine = make_engine(db, publisher, clock, hooks=crashes)
    engine.start_batch(StartBatch(*BATCH))

    first = drive_faulty(engine, publisher)
    assert (task, CRASH) in first
    assert batch_status(db, *BATCH) == "RUNNING"
    if point == CrashPoint.AFTER_COMMIT:
        assert_children_wait_unpublished(db, task)
    outcomes = first + settle(engine, publisher, clock.advance, BATCH)

    assert [o for o in outcomes if o[1] == CRASH] == [(task, CRASH)]
    assert set(statuses(db, "b1").values()) == {"SUCCESS"}
    assert batch_status(db, *BATCH) == "SUCCESS"
    assert_each_effect_once(db)
    assert_fanin_complete(db)
    retried = point != CrashPoint.AFTER_COMMIT
    attempts = {name: row["attempt"] for name, row in task_rows(db, "b1").items()}
    assert attempts == {t: 2 if retried and t == task else 1 for t in DAG}
    handler_ran_in_crash = point in {CrashPoint.AFTER_HANDLER, CrashPoint.AFTER_COMMIT}
    assert ((task, 1) in effects(db)) == handler_ran_in_crash
    run_tasks = [m["task"] for m in outbox_rows(db)]
    assert {t: run_tasks.count(t) for t in DAG} == {
        t: 2 if retried and t == task else 1 for t in DAG
    }
    assert scalar(db, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0


def assert_children_wait_unpublished(db: Engine, task: str) -> None:
    """After a crash between commit and publish: the result and the children are committed,
    their messages are in the outbox, unpublished, until the relay sends them."""
    rows = task_rows(db, "b1")
    assert rows[task]["status"] == "SUCCESS"
    children = [child for child, parents in DAG.items() if task in parents]
    assert all(rows[child]["status"] == "NEW" for child in children)
    waiting = [m["task"] for m in outbox_rows(db) if m["published_at"] is None]
    assert sorted(waiting) == sorted(children)


def test_after_commit_children_are_published_only_by_the_sweep(
    db: Engine, publisher: InMemoryPublisher, clock: FakeClock, effects_dag: None
) -> None:
    engine = make_engine(db, publisher, clock, hooks=CrashInjector.parse("after_commit:a"))
    engine.start_batch(StartBatch(*BATCH))
    assert drive_faulty(engine, publisher) == [("a", CRASH)]
    assert publisher.drain() == []
    sweeper = Sweeper(engine)
    clock.advance(59)
    assert sweeper.sweep(older_than_s=60).relayed == 0  # may still be on their way
    clock.advance(1)
    report = sweeper.sweep(older_than_s=60)
    assert (report.relayed, report.requeued) == (2, 0)
    assert sorted(m.payload["task"] for m in publisher.drain()) == ["b", "d"]


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_duplicated_shuffled_delivery_with_crashes_and_sweeps(
    db: Engine, publisher: InMemoryPublisher, clock: FakeClock, effects_dag: None, seed: int
) -> None:
    rng = random.Random(seed)
    spec = ",".join(f"{rng.choice(list(CrashPoint))}:{t}" for t in rng.sample(sorted(DAG), 2))
    engine = make_engine(db, publisher, clock, seed=seed, hooks=CrashInjector.parse(spec))
    sweep = partial(Sweeper(engine).sweep, older_than_s=60)
    engine.start_batch(StartBatch(*BATCH))

    def between() -> None:
        clock.advance(120)
        sweep()

    outcomes = settle(
        engine, publisher, clock.advance, BATCH, rng=rng, copies=(2, 3), every=3, between=between
    )
    assert sum(o == CRASH for _, o in outcomes) == 2, spec
    assert set(statuses(db, "b1").values()) == {"SUCCESS"}, spec
    assert batch_status(db, *BATCH) == "SUCCESS"
    assert_each_effect_once(db)
    assert_fanin_complete(db)
    assert scalar(db, "SELECT count(*) FROM task_log") == len(DAG)


def keys(db: Engine, task: str) -> list[tuple[int, str]]:
    with db.connect() as conn:
        rows = conn.execute(
            text("SELECT attempt, idempotency_key FROM effects WHERE task = :t ORDER BY attempt"),
            {"t": task},
        )
        return [(r.attempt, r.idempotency_key) for r in rows]


def test_the_idempotency_key_survives_a_killed_attempt_and_changes_on_rerun(
    db: Engine, publisher: InMemoryPublisher, clock: FakeClock, effects_dag: None
) -> None:
    """Killed after its side effect and before its return, b runs again: at least once per
    attempt. Its idempotency key is the same for both attempts, and new for a rerun."""
    engine = make_engine(db, publisher, clock, hooks=CrashInjector.parse("after_handler:b"))
    engine.start_batch(StartBatch(*BATCH))
    drive_faulty(engine, publisher)
    settle(engine, publisher, clock.advance, BATCH)
    assert batch_status(db, *BATCH) == "SUCCESS"
    (first, key1), (second, key2) = keys(db, "b")
    assert (first, second) == (1, 2)
    assert key1 == key2
    assert key1 != dict(keys(db, "a"))[1]  # one key per task's run

    engine.rerun_tasks("b1", ["b"], downstream=False, pipeline="p")
    settle(engine, publisher, clock.advance, BATCH)
    assert batch_status(db, *BATCH) == "SUCCESS"
    assert len({key for _, key in keys(db, "b")}) == 2  # the rerun's run has its own
