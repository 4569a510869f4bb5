"""Property: random edits of a pipeline's live rows (add/remove a task or an edge, change a task's
params or handler), made with plain SQL while its batches run on 4 worker threads that get every
message twice, never change a batch: each batch ends SUCCESS with exactly the tasks of its own
version, each run once, with that version's params and handler, after that version's parents."""

from __future__ import annotations

import itertools
import json
import queue
import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, text

from dagrelay.engine import moves
from dagrelay.engine.core import Engine as DagEngine
from dagrelay.messages import RunTask, StartBatch
from dagrelay.store.outbox import InMemoryPublisher
from tests.integration.helpers import EVENTS_TOPIC, as_run_task

pytestmark = pytest.mark.integration

NAMES = [f"t{i}" for i in range(3)]
WORKERS = 4
COPIES = 2  # every message is delivered twice
CALL = "tests.integration.test_versions_property:tagged"
_examples = itertools.count()

Op = tuple[Any, ...]
operations = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(NAMES)),
    st.tuples(st.just("remove"), st.sampled_from(NAMES)),
    st.tuples(st.just("edge"), st.sampled_from(NAMES), st.sampled_from(NAMES)),
    st.tuples(st.just("unedge"), st.sampled_from(NAMES), st.sampled_from(NAMES)),
    st.tuples(st.just("params"), st.sampled_from(NAMES), st.integers(0, 99)),
    st.tuples(st.just("handler"), st.sampled_from(NAMES), st.integers(0, 99)),
    st.tuples(st.just("start")),
    st.tuples(st.just("deliver"), st.integers(1, 12)),
)


def tagged(tag: int) -> dict[str, Any]:
    return {"tag": tag}


def task_row(handler: str, tag: int) -> tuple[str, str]:
    if handler == "python.noop":
        return handler, json.dumps({"output": {"tag": tag}})
    return "python.call", json.dumps({"callable": CALL, "kwargs": {"tag": tag}})


def expected_output(handler: str, params: dict[str, Any]) -> Any:
    return params["output"] if handler == "python.noop" else params["kwargs"]


EDITS: dict[str, str] = {
    "add": "INSERT INTO tasks (pipeline, name, handler, params) "
    "VALUES (:p, :a, :h, CAST(:params AS jsonb)) ON CONFLICT DO NOTHING",
    "remove": "DELETE FROM tasks WHERE pipeline = :p AND name = :a",
    "edge": "INSERT INTO task_dependencies (child_task_id, parent_task_id) "
    "SELECT c.task_id, p.task_id FROM tasks c, tasks p "
    "WHERE c.pipeline = :p AND p.pipeline = :p AND c.name = :b AND p.name = :a "
    "ON CONFLICT DO NOTHING",
    "unedge": "DELETE FROM task_dependencies d USING tasks c, tasks p "
    "WHERE c.task_id = d.child_task_id AND p.task_id = d.parent_task_id "
    "AND c.pipeline = :p AND c.name = :b AND p.name = :a",
    "params": "UPDATE tasks SET params = CAST(:params AS jsonb) WHERE pipeline = :p AND name = :a",
}


def edit(conn: Connection, pipeline: str, op: Op) -> None:
    kind = op[0]
    if kind in ("edge", "unedge"):
        parent, child = sorted(op[1:3])  # edges go from lower to higher names: never a cycle
        if parent != child:
            conn.execute(text(EDITS[kind]), {"p": pipeline, "a": parent, "b": child})
        return
    current = conn.execute(
        text("SELECT handler FROM tasks WHERE pipeline = :p AND name = :a"),
        {"p": pipeline, "a": op[1]},
    ).scalar_one_or_none()
    if kind == "handler" and current is not None:
        other = "python.call" if current == "python.noop" else "python.noop"
        handler, params = task_row(other, op[2])
        conn.execute(
            text(
                "UPDATE tasks SET handler = :h, params = CAST(:params AS jsonb) "
                "WHERE pipeline = :p AND name = :a"
            ),
            {"p": pipeline, "a": op[1], "h": handler, "params": params},
        )
    elif kind in ("add", "remove") or (kind == "params" and current is not None):
        handler, params = task_row(current or "python.noop", op[2] if len(op) > 2 else 0)
        conn.execute(text(EDITS[kind]), {"p": pipeline, "a": op[1], "h": handler, "params": params})


class Workers:
    """4 threads delivering run_task messages, each twice. Published messages wait in
    ``staged`` until ``deliver`` hands some to the threads: the test decides how far batches
    get between two edits."""

    def __init__(self, engine: DagEngine, publisher: InMemoryPublisher) -> None:
        self.engine, self.publisher = engine, publisher
        self.inbox: queue.Queue[RunTask | None] = queue.Queue()
        self.staged: list[RunTask] = []
        self.lock = threading.Lock()
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._work) for _ in range(WORKERS)]

    def __enter__(self) -> Workers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for _ in self.threads:
            self.inbox.put(None)
        for thread in self.threads:
            thread.join(60)

    def pump(self) -> None:
        with self.lock:
            for message in self.publisher.drain(EVENTS_TOPIC):
                self.staged += [as_run_task(message)] * COPIES

    def deliver(self, count: int) -> None:
        """Hand the oldest ``count`` staged messages to the threads; wait until handled."""
        with self.lock:
            taken, self.staged = self.staged[:count], self.staged[count:]
        for message in taken:
            self.inbox.put(message)
        self.inbox.join()

    def _work(self) -> None:
        while (message := self.inbox.get()) is not None:
            try:
                self.engine.run_task(message)
                self.pump()
            except BaseException as exc:
                self.errors.append(exc)
            finally:
                self.inbox.task_done()

    def settle(self) -> None:
        while True:
            self.pump()
            if not self.staged:
                break
            self.deliver(len(self.staged))
        assert not self.errors, self.errors


def check_batch(conn: Connection, pipeline: str, batch_id: str) -> None:
    batch = conn.execute(
        text("SELECT status::text, version_id FROM batches WHERE pipeline = :p AND batch_id = :b"),
        {"p": pipeline, "b": batch_id},
    ).one()
    version = moves.load_definition(conn, batch.version_id)
    found = conn.execute(
        text(
            "SELECT tl.task_id, tl.status::text AS status, tl.output, "
            "(SELECT count(*) FROM task_attempts a WHERE a.log_id = tl.log_id) AS attempts, "
            "(SELECT min(attempt_id) FROM task_attempts a WHERE a.log_id = tl.log_id) AS ran "
            "FROM task_log tl WHERE tl.pipeline = :p AND tl.batch_id = :b"
        ),
        {"p": pipeline, "b": batch_id},
    ).mappings()
    by_id = {r["task_id"]: r for r in found}
    tasks = {t.task_id: t for t in version.tasks.values()}
    assert (batch.status, set(by_id)) == ("SUCCESS", set(tasks)), (batch_id, dict(by_id))
    for task_id, row in by_id.items():
        task = tasks[task_id]
        assert (row["status"], row["attempts"]) == ("SUCCESS", 1), (batch_id, task.name)
        output = expected_output(task.settings["handler"], task.settings["params"])
        assert row["output"] == output, (batch_id, task.name)
        for parent in task.parents:
            assert by_id[version.tasks[parent].task_id]["ran"] < row["ran"], (task.name, parent)


@pytest.fixture
def harness(
    engine: DagEngine, publisher: InMemoryPublisher, db: Engine
) -> Callable[[list[Op]], None]:
    def run(ops: list[Op]) -> None:
        pipeline = f"prop{next(_examples)}"
        started: list[str] = []
        with Workers(engine, publisher) as workers:
            for op in ops:
                if op[0] == "deliver":
                    workers.deliver(op[1])
                    continue
                if op[0] != "start":
                    with db.begin() as conn:
                        edit(conn, pipeline, op)
                    continue
                with db.connect() as conn:
                    has_tasks = conn.execute(
                        text("SELECT EXISTS (SELECT 1 FROM tasks WHERE pipeline = :p)"),
                        {"p": pipeline},
                    ).scalar_one()
                if has_tasks:
                    batch_id = f"b{len(started)}"
                    engine.start_batch(StartBatch(pipeline, batch_id))
                    started.append(batch_id)
                    workers.pump()
            workers.settle()
        with db.connect() as conn:
            for batch_id in started:
                check_batch(conn, pipeline, batch_id)

    return run


# Each example runs batches against the database (~0.4 s): a third of the profile's count
# (tests/conftest.py), so 100 in CI, 8 in a developer's run.
@settings(
    max_examples=max(1, settings().max_examples // 3),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(operations, min_size=5, max_size=40))
def test_every_batch_runs_exactly_its_own_version(
    harness: Callable[[list[Op]], None], ops: list[Op]
) -> None:
    harness([("add", "t0"), ("start",), *ops, ("start",)])
