"""Deadlines (issue 23): a batch deadline and task deadlines, checked by the sweeper with an
injected clock. One alert per missed deadline, none when met, none twice; a miss is shown by
``status`` and ``explain``; a task's ``fail`` ends it ERROR (a running attempt and a waiting
one), once."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from rich.console import Console
from sqlalchemy import Engine, text

from dagrelay.cli.explain import explain_tree
from dagrelay.cli.render import batch_table
from dagrelay.engine.core import Engine as DagEngine
from dagrelay.engine.sweeper import Sweeper
from dagrelay.handlers.registry import HandlerContext, HandlerRegistry
from dagrelay.messages import RunTask, StartBatch
from dagrelay.pipelines import api
from dagrelay.pipelines.apply import apply
from dagrelay.pipelines.export import export_yaml, read_pipeline
from dagrelay.store import reads
from dagrelay.store.outbox import InMemoryPublisher
from tests.conftest import FakeClock
from tests.integration.helpers import (
    Gate,
    batch_status,
    drive,
    framework_client,
    make_engine,
    scalar,
    statuses,
)
from tests.integration.test_dashboard import clear_caches

pytestmark = pytest.mark.integration

ALERTS = "dagrelay-alerts"


class Handlers:
    def __init__(self) -> None:
        self.gate = Gate()
        self.gated: set[str] = set()
        self.runs: list[str] = []
        self.registry = HandlerRegistry()
        self.registry.register("t.run", self.run)

    def run(self, ctx: HandlerContext) -> dict[str, Any]:
        if ctx.task in self.gated:
            self.gate(ctx)
        self.runs.append(ctx.task)
        return {}


@pytest.fixture
def handlers() -> Handlers:
    return Handlers()


@pytest.fixture
def dag(
    db: Engine, publisher: InMemoryPublisher, clock: FakeClock, handlers: Handlers
) -> DagEngine:
    return make_engine(db, publisher, clock, registry=handlers.registry)


def define(
    db: Engine,
    clock: FakeClock,
    *,
    batch: api.Deadline | None = None,
    tasks: dict[str, api.Deadline] | None = None,
) -> None:
    """a -> b -> c, all ``t.run``, with the deadlines given, applied as a file would be."""
    tasks = tasks or {}
    p = api.Pipeline("p", deadline=batch)
    a = p.add("a", handler="t.run", deadline=tasks.get("a"))
    b = p.add("b", handler="t.run", parents=[a], deadline=tasks.get("b"))
    p.add("c", handler="t.run", parents=[b], deadline=tasks.get("c"))
    with db.begin() as conn:
        apply(conn, p.spec(), now=clock())


def alerts(publisher: InMemoryPublisher) -> list[dict[str, Any]]:
    return [json.loads(m.data()) for m in publisher.drain(ALERTS)]


def deadline_alerts(publisher: InMemoryPublisher) -> list[tuple[str, str | None]]:
    return [(a["batch_id"], a["task"]) for a in alerts(publisher) if a["kind"] == "deadline_missed"]


def test_a_batch_that_finishes_in_time_raises_nothing(
    dag: DagEngine, db: Engine, publisher: InMemoryPublisher, clock: FakeClock
) -> None:
    define(db, clock, batch=api.Deadline(600), tasks={"c": api.Deadline(600, after="start")})
    dag.start_batch(StartBatch("p", "b1"))
    drive(dag, publisher)
    assert batch_status(db, "p", "b1") == "SUCCESS"
    for _ in range(3):
        clock.advance(3600)
        Sweeper(dag).sweep()
    assert deadline_alerts(publisher) == []
    assert scalar(db, "SELECT count(*) FROM deadline_misses") == 0


def test_a_missed_batch_deadline_raises_one_alert_however_many_sweeps(
    dag: DagEngine, db: Engine, publisher: InMemoryPublisher, clock: FakeClock, handlers: Handlers
) -> None:
    define(db, clock, batch=api.Deadline(600))
    dag.start_batch(StartBatch("p", "b1"))
    clock.advance(599)
    assert Sweeper(dag).sweep().deadlines_missed == 0
    clock.advance(2)
    assert Sweeper(dag).sweep().deadlines_missed == 1
    for _ in range(3):
        clock.advance(60)
        assert Sweeper(dag).sweep().deadlines_missed == 0
    assert deadline_alerts(publisher) == [("b1", None)]
    # Not failed by a batch deadline: it goes on and succeeds, late.
    drive(dag, publisher)
    assert batch_status(db, "p", "b1") == "SUCCESS"
    assert handlers.runs == ["a", "b", "c"]
    with db.connect() as conn:
        batch = reads.read_batch(conn, "p", "b1")
    assert batch is not None
    [deadline] = batch["deadlines"]
    assert (deadline["task"], deadline["missed_at"]) == (None, clock.now - timedelta(seconds=180))
    text_ = reads.deadline_text(deadline, clock())
    assert text_ == "batch: missed 2024-03-01T00:10:00+00:00 (ended at 2024-03-01T00:13:01+00:00)"


def test_a_batch_that_ends_late_between_two_sweeps_is_a_miss(
    dag: DagEngine, db: Engine, publisher: InMemoryPublisher, clock: FakeClock
) -> None:
    define(db, clock, batch=api.Deadline(600), tasks={"b": api.Deadline(300)})
    dag.start_batch(StartBatch("p", "b1"))
    clock.advance(900)  # no sweep before the batch ends
    drive(dag, publisher)
    assert batch_status(db, "p", "b1") == "SUCCESS"
    clock.advance(60)
    assert Sweeper(dag).sweep().deadlines_missed == 2
    assert sorted(deadline_alerts(publisher), key=str) == [("b1", "b"), ("b1", None)]
    ended = scalar(db, "SELECT count(*) FROM deadline_misses WHERE ended_at IS NOT NULL")
    assert ended == 2


def test_the_deadline_counts_from_the_scheduled_time(
    dag: DagEngine, db: Engine, publisher: InMemoryPublisher, clock: FakeClock
) -> None:
    """A batch scheduled an hour ago (a catch-up run) is already late for a 30-minute
    deadline from its scheduled time, and not for one from its start."""
    define(
        db,
        clock,
        batch=api.Deadline(1800),
        tasks={"a": api.Deadline(1800, after="start")},
    )
    scheduled_for = (clock() - timedelta(hours=1)).isoformat()
    dag.start_batch(StartBatch("p", "b1", params={"scheduled_for": scheduled_for}))
    clock.advance(1)
    assert Sweeper(dag).sweep().deadlines_missed == 1
    assert deadline_alerts(publisher) == [("b1", None)]


def test_fail_ends_a_running_attempt_error_once_and_its_late_result_is_rejected(
    dag: DagEngine, db: Engine, publisher: InMemoryPublisher, clock: FakeClock, handlers: Handlers
) -> None:
    define(db, clock, tasks={"a": api.Deadline(60, fail=True)})
    dag.start_batch(StartBatch("p", "b1"))
    publisher.drain()
    handlers.gated = {"a"}
    running = threading.Thread(target=lambda: dag.run_task(RunTask("b1", "a", pipeline="p")))
    running.start()
    try:
        assert handlers.gate.entered.wait(10)
        clock.advance(61)
        Sweeper(dag).sweep()
        assert statuses(db, "b1")["a"] == "ERROR"
    finally:
        handlers.gate.release.set()
        running.join(10)
    assert statuses(db, "b1") == {"a": "ERROR", "b": "UPSTREAM_FAILED", "c": "UPSTREAM_FAILED"}
    assert batch_status(db, "p", "b1") == "FAILED"
    kinds = sorted(a["kind"] for a in alerts(publisher))
    assert kinds == ["deadline_missed", "task_failed"]
    error = scalar(db, "SELECT error FROM task_log WHERE status = 'ERROR'")
    assert "DeadlineMissed: task a of batch p/b1 was to finish by" in error
    clock.advance(60)
    Sweeper(dag).sweep()
    assert alerts(publisher) == []


def test_fail_ends_a_waiting_task_error_and_its_message_is_then_ignored(
    dag: DagEngine, db: Engine, publisher: InMemoryPublisher, clock: FakeClock, handlers: Handlers
) -> None:
    define(db, clock, tasks={"a": api.Deadline(60, fail=True)})
    dag.start_batch(StartBatch("p", "b1"))  # a is NEW, its message not yet delivered
    clock.advance(61)
    Sweeper(dag).sweep()
    assert statuses(db, "b1") == {"a": "ERROR", "b": "UPSTREAM_FAILED", "c": "UPSTREAM_FAILED"}
    assert batch_status(db, "p", "b1") == "FAILED"
    drive(dag, publisher)  # the run_task message in flight: not claimable any more
    assert handlers.runs == []
    assert sorted(a["kind"] for a in alerts(publisher)) == ["deadline_missed", "task_failed"]


def test_a_deadline_without_fail_leaves_the_task_running(
    dag: DagEngine, db: Engine, publisher: InMemoryPublisher, clock: FakeClock, handlers: Handlers
) -> None:
    define(db, clock, tasks={"a": api.Deadline(60)})
    dag.start_batch(StartBatch("p", "b1"))
    clock.advance(61)
    Sweeper(dag).sweep()
    assert statuses(db, "b1") == {"a": "NEW"}
    drive(dag, publisher)
    assert batch_status(db, "p", "b1") == "SUCCESS"
    assert deadline_alerts(publisher) == [("b1", "a")]


def test_two_sweeps_at_once_record_and_alert_a_miss_once(
    dag: DagEngine, db: Engine, publisher: InMemoryPublisher, clock: FakeClock
) -> None:
    define(db, clock, batch=api.Deadline(60), tasks={"a": api.Deadline(60, fail=True)})
    for batch in ("b1", "b2", "b3"):
        dag.start_batch(StartBatch("p", batch))
    clock.advance(61)
    threads = [threading.Thread(target=Sweeper(dag).sweep) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    found = deadline_alerts(publisher)
    assert sorted(found, key=str) == sorted(
        [(b, t) for b in ("b1", "b2", "b3") for t in ("a", None)], key=str
    )
    failed = scalar(db, "SELECT count(*) FROM task_log WHERE status = 'ERROR'")
    assert failed == 3


def test_deadlines_round_trip_through_apply_and_export(db: Engine, clock: FakeClock) -> None:
    define(
        db,
        clock,
        batch=api.Deadline(7200, after="start"),
        tasks={"b": api.Deadline(600, fail=True)},
    )
    with db.connect() as conn:
        spec = read_pipeline(conn, "p")
    text_ = export_yaml(spec)
    assert "deadline:\n  within_s: 7200\n  after: start\n" in text_
    assert "  deadline:\n    within_s: 600\n    fail: true\n" in text_
    # The same file again changes nothing; dropping the batch deadline removes the row.
    define(
        db,
        clock,
        batch=api.Deadline(7200, after="start"),
        tasks={"b": api.Deadline(600, fail=True)},
    )
    assert scalar(db, "SELECT count(*) FROM pipelines WHERE deadline IS NOT NULL") == 1
    define(db, clock)
    assert scalar(db, "SELECT count(*) FROM pipelines") == 0
    assert scalar(db, "SELECT count(*) FROM tasks WHERE deadline IS NOT NULL") == 0


def test_a_deadline_is_part_of_the_version(dag: DagEngine, db: Engine, clock: FakeClock) -> None:
    define(db, clock)
    dag.start_batch(StartBatch("p", "b1"))
    define(db, clock, tasks={"a": api.Deadline(60)})
    dag.start_batch(StartBatch("p", "b2"))
    versions = scalar(db, "SELECT count(DISTINCT version_id) FROM batches")
    assert versions == 2
    with db.begin() as conn:
        pinned = conn.execute(
            text(
                "SELECT b.batch_id, t.deadline FROM batches b JOIN version_tasks t "
                "ON t.version_id = b.version_id WHERE t.name = 'a' ORDER BY b.batch_id"
            )
        ).all()
    assert [(r.batch_id, r.deadline) for r in pinned] == [("b1", None), ("b2", {"within_s": 60})]


def test_a_malformed_deadline_row_is_refused_by_the_database(db: Engine) -> None:
    with db.begin() as conn:
        conn.execute(text("INSERT INTO tasks (name, pipeline, handler) VALUES ('x', 'q', 'h')"))
    with pytest.raises(Exception, match="tasks_deadline_shape"), db.begin() as conn:
        conn.execute(text("""UPDATE tasks SET deadline = '{"within_s": -5}' WHERE name = 'x'"""))


def rendered(renderable: Any) -> str:
    console = Console(width=200, record=True)
    console.print(renderable)
    return console.export_text()


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch, db_url: str) -> Iterator[FlaskClient]:
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.delenv("DAGRELAY_CONFIG", raising=False)
    clear_caches()
    yield framework_client("status", "http")
    clear_caches()


def test_status_explain_and_the_dashboard_show_a_missed_deadline(
    dag: DagEngine, db: Engine, publisher: InMemoryPublisher, clock: FakeClock, client: FlaskClient
) -> None:
    define(db, clock, batch=api.Deadline(600), tasks={"a": api.Deadline(60, fail=True)})
    dag.start_batch(StartBatch("p", "b1"))
    clock.advance(61)
    Sweeper(dag).sweep()
    with db.connect() as conn:
        batch = reads.read_batch(conn, "p", "b1")
    assert batch is not None
    table = rendered(batch_table(batch))
    assert "deadline batch: met 2024-03-01T00:10:00+00:00" in table  # it failed at 00:01:01
    assert (
        "deadline task a: missed 2024-03-01T00:01:00+00:00 (ended at 2024-03-01T00:01:01+00:00); "
        "the task was failed"
    ) in table
    missed = [d for d in batch["deadlines"] if d["missed_at"] is not None]
    tree = rendered(explain_tree("p", "b1", batch["status"], batch["root_causes"], missed=missed))
    assert "deadline task a: missed 2024-03-01T00:01:00+00:00" in tree
    assert "a ERROR after 0 attempts: DeadlineMissed: task a of batch p/b1" in tree

    html = client.get("/batches/p/b1").get_data(as_text=True)
    assert '<li data-deadline="a" class="missed">task a: missed' in html
    assert '<li data-deadline="" class="">batch: met' in html
    detail = client.get("/api/batches/p/b1").get_json()
    assert [(d["task"], d["missed_at"] is not None) for d in detail["deadlines"]] == [
        (None, False),
        ("a", True),
    ]
