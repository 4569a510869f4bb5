"""rerun: a task (and its descendants) is reset and run again, its history kept, the batch
resumes; fan-in counters stay exact so every child is still created exactly once."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import Engine, text

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.errors import BadMessage
from dagrelay.messages import Rerun, RunTask, StartBatch
from dagrelay.store.outbox import InMemoryPublisher
from tests.integration.helpers import EVENTS_TOPIC, drive

pytestmark = pytest.mark.integration

InsertPipeline = Callable[..., dict[str, int]]


def statuses(db: Engine, batch_id: str) -> dict[str, tuple[str, int]]:
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT t.name, tl.status::text, tl.attempt FROM task_log tl "
                "JOIN tasks t USING (task_id) WHERE tl.batch_id = :b"
            ),
            {"b": batch_id},
        ).all()
    return {name: (status, attempt) for name, status, attempt in rows}


def batch_status(db: Engine, batch_id: str) -> str:
    with db.connect() as conn:
        return str(
            conn.execute(
                text("SELECT status::text FROM batches WHERE batch_id = :b"), {"b": batch_id}
            ).scalar_one()
        )


def fix_task(db: Engine, name: str) -> None:
    """What an operator does before a rerun --latest: make the broken task work (in the live
    definition; the batch moves to that version)."""
    with db.begin() as conn:
        conn.execute(
            text("UPDATE tasks SET handler = 'python.noop', params = '{}' WHERE name = :n"),
            {"n": name},
        )


@pytest.fixture
def failed_batch(
    engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline, db: Engine
) -> None:
    """a -> bad -> c -> d and a -> e -> d: bad fails, c and d become UPSTREAM_FAILED."""
    insert_pipeline(
        "p",
        {"bad": ["a"], "c": ["bad"], "e": ["a"], "d": ["c", "e"]},
        handlers={"bad": "python.fail"},
        params={"bad": '{"message": "disk on fire", "retryable": false}'},
    )
    engine.start_batch(StartBatch("p", "b1"))
    drive(engine, publisher)
    assert batch_status(db, "b1") == "FAILED"
    assert statuses(db, "b1")["d"] == ("UPSTREAM_FAILED", 0)


@pytest.mark.usefixtures("failed_batch")
def test_rerun_downstream_after_a_fix_resumes_the_batch_to_success(
    engine: DagEngine, publisher: InMemoryPublisher, db: Engine
) -> None:
    fix_task(db, "bad")

    reset = engine.rerun(Rerun(batch_id="b1", task="bad", downstream=True, latest=True))
    assert batch_status(db, "b1") == "RUNNING"
    drive(engine, publisher)

    assert reset == 3  # bad, c, d
    assert batch_status(db, "b1") == "SUCCESS"
    assert statuses(db, "b1") == {
        "a": ("SUCCESS", 1),
        "bad": ("SUCCESS", 1),
        "e": ("SUCCESS", 1),
        "c": ("SUCCESS", 1),
        "d": ("SUCCESS", 1),
    }
    with db.connect() as conn:
        history = conn.execute(
            text(
                "SELECT a.outcome::text, a.log_id IS NULL FROM task_attempts a "
                "JOIN tasks t USING (task_id) WHERE t.name = 'bad' ORDER BY a.attempt_id"
            )
        ).all()
        counters = conn.execute(
            text(
                "SELECT t.name, f.parents, f.succeeded, f.failed FROM task_fanin f "
                "JOIN tasks t USING (task_id) WHERE f.batch_id = 'b1' ORDER BY t.name"
            )
        ).all()
    assert [tuple(h) for h in history] == [("ERROR", True), ("SUCCESS", False)]
    assert [tuple(c) for c in counters] == [
        ("bad", 1, 1, 0),
        ("c", 1, 1, 0),
        ("d", 2, 2, 0),
        ("e", 1, 1, 0),
    ]


@pytest.mark.usefixtures("failed_batch")
def test_rerun_without_downstream_reruns_only_the_task(
    engine: DagEngine, publisher: InMemoryPublisher, db: Engine
) -> None:
    fix_task(db, "bad")

    assert engine.rerun(Rerun(batch_id="b1", task="bad", latest=True)) == 1
    drive(engine, publisher)

    result = statuses(db, "b1")
    assert result["bad"] == ("SUCCESS", 1)
    assert result["c"] == ("UPSTREAM_FAILED", 0)  # decided before; not part of the rerun
    assert batch_status(db, "b1") == "FAILED"
    with db.connect() as conn:
        c_counter = conn.execute(
            text(
                "SELECT f.succeeded, f.failed FROM task_fanin f JOIN tasks t USING (task_id) "
                "WHERE t.name = 'c'"
            )
        ).one()
    assert tuple(c_counter) == (1, 0)  # recounted, then counted once again: never doubled


@pytest.mark.usefixtures("failed_batch")
def test_rerun_of_a_successful_task_runs_it_again_and_its_children_once(
    engine: DagEngine, publisher: InMemoryPublisher, db: Engine
) -> None:
    fix_task(db, "bad")
    engine.rerun(Rerun(batch_id="b1", task="bad", downstream=True, latest=True))
    drive(engine, publisher)

    assert engine.rerun(Rerun(batch_id="b1", task="e", downstream=True)) == 2  # e and d
    delivered = drive(engine, publisher, copies=2)

    assert batch_status(db, "b1") == "SUCCESS"
    assert sorted(task for task, outcome in delivered if outcome == "SUCCESS") == ["d", "e"]
    with db.connect() as conn:
        d_messages = conn.execute(
            text(
                "SELECT count(*) FROM outbox WHERE topic = :t AND payload->>'task' = 'd' "
                "AND log_id IS NOT NULL"
            ),
            {"t": EVENTS_TOPIC},
        ).scalar_one()
    assert d_messages == 1  # the current d row got exactly one run_task


@pytest.mark.usefixtures("failed_batch")
@pytest.mark.parametrize(
    ("rerun", "expected"),
    [
        (Rerun(batch_id="nope", task="bad"), "no batch 'nope' with a task 'bad'"),
        (Rerun(batch_id="b1", task="missing"), "no batch 'b1' with a task 'missing'"),
    ],
)
def test_rerun_of_unknown_batch_or_task_is_refused(
    engine: DagEngine, rerun: Rerun, expected: str
) -> None:
    with pytest.raises(BadMessage, match=expected):
        engine.rerun(rerun)


def test_rerun_refuses_while_a_task_in_scope_is_running(
    engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline, db: Engine
) -> None:
    insert_pipeline("p", {"b": ["a"]})
    engine.start_batch(StartBatch("p", "b1"))
    publisher.drain()
    with db.begin() as conn:  # a is claimed and running elsewhere
        conn.execute(text("UPDATE task_log SET status = 'PROCESSING', attempt = 1"))

    with pytest.raises(BadMessage, match="cannot rerun while a is running"):
        engine.rerun(Rerun(batch_id="b1", task="a", downstream=True))
    assert statuses(db, "b1") == {"a": ("PROCESSING", 1)}


def test_rerun_of_a_task_not_started_yet_is_refused(
    engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline
) -> None:
    insert_pipeline("p", {"b": ["a"]})
    engine.start_batch(StartBatch("p", "b1"))

    with pytest.raises(BadMessage, match="task 'b' has not been started in batch 'b1'"):
        engine.rerun(Rerun(batch_id="b1", task="b"))
    assert engine.run_task(RunTask(batch_id="b1", task="a")) == "SUCCESS"
