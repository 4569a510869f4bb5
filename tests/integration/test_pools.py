"""Pools and limits: a task that cannot get its slots waits QUEUED with its place and is
released, in priority then arrival order, by the transaction that frees a slot; a lowered
count holds new claims at once; a saturated pool never holds another pool's tasks."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine, text

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.engine.core import RunOutcome
from dagrelay.engine.pools import set_pool
from dagrelay.errors import DagrelayError, PipelineError
from dagrelay.handlers.registry import Deferred, HandlerContext, HandlerRegistry
from dagrelay.messages import PollTask, RunTask, StartBatch
from dagrelay.pipelines.apply import apply as apply_pipeline
from dagrelay.pipelines.export import export_yaml, read_pipeline
from dagrelay.pipelines.spec import load_pipeline
from dagrelay.router.wiring import build_engine
from dagrelay.store.outbox import InMemoryPublisher
from tests.conftest import FakeClock, engine_settings
from tests.integration.helpers import as_run_task, batch_status, drive, make_engine, statuses

pytestmark = pytest.mark.integration

InsertPipeline = Callable[..., dict[str, int]]


def limit(db: Engine, pool: str | None, names: list[str], **columns: Any) -> None:
    """Put tasks in a pool (and set pool_slots / priority / max_active)."""
    sets = ", ".join(["pool = :pool", *(f"{c} = :{c}" for c in columns)])
    with db.begin() as conn:
        conn.execute(
            text(f"UPDATE tasks SET {sets} WHERE name = ANY(CAST(:names AS text[]))"),
            {"pool": pool, "names": names, **columns},
        )


def attempt_order(db: Engine, batch_id: str) -> list[str]:
    with db.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT t.name FROM task_attempts a JOIN tasks t USING (task_id) "
                    "WHERE a.batch_id = :b ORDER BY a.attempt_id"
                ),
                {"b": batch_id},
            ).scalars()
        )


def test_queued_tasks_start_in_priority_then_arrival_order(
    db: Engine, publisher: InMemoryPublisher, clock: FakeClock, insert_pipeline: InsertPipeline
) -> None:
    insert_pipeline("p", {name: [] for name in ("a", "b", "c", "d", "e")})
    limit(db, "bq", ["a", "b", "c", "d", "e"])
    limit(db, "bq", ["c"], priority=5)
    limit(db, "bq", ["e"], priority=9)
    engine = make_engine(db, publisher, clock)
    set_pool(engine, "bq", 0, "nothing may run yet")
    engine.start_batch(StartBatch("p", "b1"))
    for message in sorted(publisher.drain("dagrelay-events"), key=lambda m: m.payload["task"]):
        assert engine.run_task(as_run_task(message)) == RunOutcome.QUEUED
    assert set(statuses(db, "b1").values()) == {"QUEUED"}
    set_pool(engine, "bq", 1)  # releases exactly the head of the queue
    released = publisher.drain("dagrelay-events")
    assert [m.payload["task"] for m in released] == ["e"]
    for message in released:
        engine.run_task(as_run_task(message))
    drive(engine, publisher)
    assert attempt_order(db, "b1") == ["e", "c", "a", "b", "d"]
    assert batch_status(db, "p", "b1") == "SUCCESS"


AGING_S = 60  # one point of priority per minute waited (migrations/versions/0017_pool_aging.py)
HOLD_S = 30  # how long each task holds the pool's one slot


def hold(ctx: HandlerContext) -> Deferred:
    """Holds its slot (PROCESSING, deferred) until its poll, HOLD_S later."""
    return Deferred({"task": ctx.task}, poll_after_s=HOLD_S)


def done(ctx: HandlerContext, job: Mapping[str, Any]) -> dict[str, Any]:
    return {"done": job["task"]}


class Stream:
    """A pool of one slot, always busy: each step one more high-priority batch arrives (and
    queues), the task holding the slot ends HOLD_S later, and the head of the queue claims it."""

    def __init__(self, engine: DagEngine, publisher: InMemoryPublisher, clock: FakeClock) -> None:
        self.engine, self.publisher, self.clock = engine, publisher, clock
        self.running: RunTask | None = None
        self.claims: list[tuple[str, datetime]] = []  # (batch, when claimed)

    def arrive(self, pipeline: str, batch_id: str) -> RunOutcome:
        self.engine.start_batch(StartBatch(pipeline, batch_id))
        [message] = self.publisher.drain("dagrelay-events")
        return self.deliver(as_run_task(message))

    def deliver(self, message: RunTask) -> RunOutcome:
        outcome = self.engine.run_task(message)
        if outcome == RunOutcome.DEFERRED:
            assert self.running is None, "the pool has one slot"
            self.running = message
            self.claims.append((message.batch_id, self.clock()))
        return outcome

    def end_running(self) -> None:
        self.clock.advance(HOLD_S)
        ended, self.running = self.running, None
        assert ended is not None
        poll = PollTask(ended.batch_id, ended.task, 1, ended.pipeline)
        assert self.engine.poll_task(poll) == RunOutcome.SUCCESS
        released = [
            m for m in self.publisher.drain("dagrelay-events") if "attempt" not in m.payload
        ]
        for message in released:  # the head of the queue (poll_task messages aside)
            self.deliver(as_run_task(message))


def test_a_steady_high_priority_stream_never_starves_a_low_priority_task(
    db: Engine, publisher: InMemoryPublisher, clock: FakeClock, insert_pipeline: InsertPipeline
) -> None:
    """The documented bound: a task queued at t is passed only by tasks queued before
    t + (their priority - its priority) * AGING_S; every later one waits behind it."""
    insert_pipeline("hi", {"h": []}, {"h": "test.hold"})
    insert_pipeline("lo", {"l": []}, {"l": "test.hold"})
    limit(db, "bq", ["h"], priority=10)
    limit(db, "bq", ["l"], priority=0)
    registry = HandlerRegistry(load=False)
    registry.register("test.hold", hold, poll=done)
    engine = build_engine(
        engine_settings(), db=db, publisher=publisher, registry=registry, clock=clock,
        rng=random.Random(1),
    )  # fmt: skip
    set_pool(engine, "bq", 1)
    stream = Stream(engine, publisher, clock)
    assert stream.arrive("hi", "h0") == RunOutcome.DEFERRED  # holds the slot
    queued_at = clock()
    assert stream.arrive("lo", "low") == RunOutcome.QUEUED
    arrivals: dict[str, datetime] = {}
    for step in range(1, 80):  # 40 minutes of a high-priority batch every 30 s
        arrivals[f"h{step}"] = clock()
        assert stream.arrive("hi", f"h{step}") == RunOutcome.QUEUED
        stream.end_running()
        if stream.running is not None and stream.running.batch_id == "low":
            break
    claimed = dict(stream.claims)
    assert "low" in claimed, "the low-priority task starved"
    waited = (claimed["low"] - queued_at).total_seconds()
    assert waited <= 10 * AGING_S + HOLD_S
    passed = [b for b, _ in stream.claims if b not in ("h0", "low")]
    assert passed  # priority still counts: some higher-priority tasks went first
    assert all((arrivals[b] - queued_at).total_seconds() < 10 * AGING_S for b in passed)


def test_pool_set_rejects_bad_input(
    db: Engine, publisher: InMemoryPublisher, clock: FakeClock
) -> None:
    engine = make_engine(db, publisher, clock)
    with pytest.raises(DagrelayError, match="slots must be between 0 and"):
        set_pool(engine, "bq", -1)
    with pytest.raises(DagrelayError, match="pool name"):
        set_pool(engine, " ", 1)


def test_a_duplicate_of_a_queued_task_stays_queued(
    db: Engine, publisher: InMemoryPublisher, clock: FakeClock, insert_pipeline: InsertPipeline
) -> None:
    insert_pipeline("p", {"a": []})
    limit(db, "bq", ["a"])
    engine = make_engine(db, publisher, clock)
    set_pool(engine, "bq", 0)
    engine.start_batch(StartBatch("p", "b1"))
    publisher.drain()
    message = RunTask(pipeline="p", batch_id="b1", task="a")
    assert [engine.run_task(message) for _ in range(3)] == [RunOutcome.QUEUED] * 3
    set_pool(engine, "bq", 2)
    drive(engine, publisher, copies=3)
    assert attempt_order(db, "b1") == ["a"]
    assert batch_status(db, "p", "b1") == "SUCCESS"


def test_pipeline_files_carry_the_pool_settings_and_a_batch_keeps_its_versions(
    db: Engine, publisher: InMemoryPublisher, clock: FakeClock, tmp_path: Path
) -> None:
    path = tmp_path / "p.yaml"
    task = {"name": "a", "handler": "python.noop", "pool": "bq", "pool_slots": 2,
            "priority": 7, "max_active": 1}  # fmt: skip
    path.write_text(yaml.safe_dump({"pipeline": "p", "tasks": [task]}), encoding="utf-8")
    with db.begin() as conn:
        apply_pipeline(conn, load_pipeline(path))
    with db.connect() as conn:
        exported = yaml.safe_load(export_yaml(read_pipeline(conn, "p")))
    assert exported["tasks"][0] | task == exported["tasks"][0]  # written and read back
    engine = make_engine(db, publisher, clock)
    set_pool(engine, "bq", 1)
    engine.start_batch(StartBatch("p", "b1"))
    limit(db, None, ["a"], pool_slots=1, priority=0, max_active=None)  # the live row changes
    [message] = publisher.drain()
    assert engine.run_task(as_run_task(message)) == RunOutcome.QUEUED  # 2 slots of the version
    with pytest.raises(DagrelayError, match="slots must be between"):
        set_pool(engine, "bq", 100_001)
    set_pool(engine, "bq", 2)
    drive(engine, publisher)
    assert batch_status(db, "p", "b1") == "SUCCESS"


def test_a_bad_pool_setting_in_a_pipeline_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    task = {"name": "a", "handler": "python.noop", "pool_slots": 0}
    path.write_text(yaml.safe_dump({"pipeline": "p", "tasks": [task]}), encoding="utf-8")
    with pytest.raises(PipelineError, match="pool_slots"):
        load_pipeline(path)
