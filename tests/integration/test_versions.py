"""Every batch runs the pipeline version it started with: edits to the live rows mid-batch (plain
SQL here) change nothing for it; two pipelines share task names and batch ids; a cancelled batch
rerun only in part does not end SUCCESS."""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable

import pytest
from sqlalchemy import Engine, text

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.errors import BadMessage
from dagrelay.messages import CancelBatch, Envelope, Rerun, RunTask, StartBatch
from dagrelay.router.dispatch import Router
from dagrelay.store.outbox import InMemoryPublisher
from tests.integration.helpers import EVENTS_TOPIC, as_run_task, drive

pytestmark = pytest.mark.integration

InsertPipeline = Callable[..., dict[str, int]]


def rows(db: Engine, pipeline: str, batch_id: str) -> dict[str, tuple[str, object]]:
    """{task: (status, output)} of the batch, names from its version."""
    with db.connect() as conn:
        found = conn.execute(
            text(
                "SELECT t.name, tl.status::text, tl.output FROM task_log tl "
                "JOIN batches b USING (pipeline, batch_id) "
                "JOIN version_tasks t ON t.version_id = b.version_id AND t.task_id = tl.task_id "
                "WHERE tl.pipeline = :p AND tl.batch_id = :b"
            ),
            {"p": pipeline, "b": batch_id},
        ).all()
    return {name: (status, output) for name, status, output in found}


def batch_status(db: Engine, pipeline: str, batch_id: str) -> str:
    with db.connect() as conn:
        return str(
            conn.execute(
                text("SELECT status::text FROM batches WHERE pipeline = :p AND batch_id = :b"),
                {"p": pipeline, "b": batch_id},
            ).scalar_one()
        )


def sql(db: Engine, statement: str) -> None:
    with db.begin() as conn:
        conn.execute(text(statement))


ADD_EDGE_A_C = """INSERT INTO task_dependencies (child_task_id, parent_task_id)
    SELECT c.task_id, p.task_id FROM tasks c, tasks p WHERE c.name = 'c' AND p.name = 'a'"""


def test_an_edge_added_mid_batch_does_not_change_the_batch(
    engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline, db: Engine
) -> None:
    """Was: c ran after x alone, then a's completion overflowed c's fan-in counter (the CHECK
    failed) and the batch stayed RUNNING forever."""
    insert_pipeline("p", {"c": ["x"], "a": []})
    engine.start_batch(StartBatch("p", "b1"))
    sql(db, ADD_EDGE_A_C)
    by_task = {m.task: m for m in map(as_run_task, publisher.drain(EVENTS_TOPIC))}
    engine.run_task(by_task["x"])
    drive(engine, publisher)  # c runs: in b1's version its only parent is x
    engine.run_task(by_task["a"])

    assert batch_status(db, "p", "b1") == "SUCCESS"
    assert {t: s for t, (s, _) in rows(db, "p", "b1").items()} == dict.fromkeys("acx", "SUCCESS")
    engine.start_batch(StartBatch("p", "b2"))  # the next batch has the edge: c waits for a
    by_task = {m.task: m for m in map(as_run_task, publisher.drain(EVENTS_TOPIC))}
    engine.run_task(by_task["x"])
    assert publisher.drain(EVENTS_TOPIC) == []
    engine.run_task(by_task["a"])
    drive(engine, publisher)
    assert batch_status(db, "p", "b2") == "SUCCESS"


def test_an_edge_removed_mid_batch_does_not_change_the_batch(
    engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline, db: Engine
) -> None:
    """Was: c was never decided (a's completion no longer counted for it) and the batch ended
    SUCCESS without c."""
    insert_pipeline("p", {"c": ["x", "a"]})
    engine.start_batch(StartBatch("p", "b1"))
    sql(
        db,
        "DELETE FROM task_dependencies WHERE parent_task_id = "
        "(SELECT task_id FROM tasks WHERE name = 'a')",
    )
    drive(engine, publisher, copies=2, rng=random.Random(7))

    assert batch_status(db, "p", "b1") == "SUCCESS"
    assert {t: s for t, (s, _) in rows(db, "p", "b1").items()} == dict.fromkeys("acx", "SUCCESS")


def test_a_handler_or_params_change_mid_batch_does_not_change_the_batch(
    engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline, db: Engine
) -> None:
    insert_pipeline("p", {"b": ["a"]}, params={"b": '{"output": {"v": 1}}'})
    engine.start_batch(StartBatch("p", "b1"))
    sql(db, "UPDATE tasks SET handler = 'python.fail', params = '{}' WHERE name = 'b'")
    drive(engine, publisher)
    engine.start_batch(StartBatch("p", "b2"))
    drive(engine, publisher)

    assert rows(db, "p", "b1")["b"] == ("SUCCESS", {"v": 1})
    assert batch_status(db, "p", "b2") == "FAILED"  # the new definition, from b2 on
    with db.connect() as conn:
        versions = conn.execute(
            text(
                "SELECT b.batch_id, v.version FROM batches b JOIN pipeline_versions v "
                "USING (version_id) ORDER BY 1"
            )
        ).all()
    assert [tuple(v) for v in versions] == [("b1", 1), ("b2", 2)]


def test_a_task_deleted_with_sql_leaves_old_batches_whole(
    engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline, db: Engine
) -> None:
    insert_pipeline("p", {"b": ["a"]})
    engine.start_batch(StartBatch("p", "b1"))
    drive(engine, publisher)
    sql(db, "DELETE FROM tasks WHERE name = 'b'")  # was refused: task_log referenced it
    engine.start_batch(StartBatch("p", "b2"))
    drive(engine, publisher)

    assert set(rows(db, "p", "b1")) == {"a", "b"}
    assert set(rows(db, "p", "b2")) == {"a"}


def test_two_pipelines_with_the_same_task_names_and_batch_ids(
    engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline, db: Engine
) -> None:
    for pipeline in ("sales", "costs"):
        insert_pipeline(
            pipeline,
            {"load": ["extract"]},
            params={"extract": json.dumps({"output": {"from": pipeline}})},
        )
    engine.start_batch(StartBatch("sales", "2024-03"))
    engine.start_batch(StartBatch("costs", "2024-03"))
    drive(engine, publisher, copies=2, rng=random.Random(3))

    for pipeline in ("sales", "costs"):
        assert batch_status(db, pipeline, "2024-03") == "SUCCESS"
        assert rows(db, pipeline, "2024-03")["extract"] == ("SUCCESS", {"from": pipeline})
    with pytest.raises(BadMessage, match="exists in pipelines costs, sales"):
        engine.run_task(RunTask(batch_id="2024-03", task="load"))  # an older sender's message


def test_an_old_message_without_pipeline_is_accepted_when_unambiguous_else_rejected(
    engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline, db: Engine
) -> None:
    router = Router(engine, db, engine.clock, dead_letter_topic="dl")
    insert_pipeline("p", {"b": ["a"]})
    insert_pipeline("q", {"z": ["a"]})
    engine.start_batch(StartBatch("p", "b1"))
    engine.start_batch(StartBatch("q", "b1"))
    publisher.drain(EVENTS_TOPIC)

    def envelope(body: dict[str, object], message_id: str) -> Envelope:
        data = base64.b64encode(json.dumps(body).encode()).decode()
        return Envelope(data, {"action": "run_task"}, message_id)

    ambiguous = envelope({"action": "run_task", "batch_id": "b1", "task": "a"}, "m1")
    assert router.handle(ambiguous) == "rejected"
    engine.run_task(RunTask(batch_id="b1", task="a", pipeline="p"))
    (released,) = publisher.drain(EVENTS_TOPIC)
    assert released.payload == {"action": "run_task", "pipeline": "p", "batch_id": "b1",
                                "task": "b"}  # fmt: skip
    old = envelope({"action": "run_task", "batch_id": "b1", "task": "b"}, "m2")
    assert router.handle(old) == "success"  # only p's b1 has a task b
    with db.connect() as conn:
        reasons = conn.execute(text("SELECT reason FROM rejected_messages")).scalars().all()
    assert reasons == [
        (
            "the message names no pipeline and batch 'b1' with task 'a' exists in pipelines p, q: "
            'send it again with "pipeline"'
        )
    ]


def test_a_cancelled_batch_rerun_in_part_ends_cancelled(
    engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline, db: Engine
) -> None:
    """Was: one parent of a 20-parent fan-in rerun after a cancel -> batch SUCCESS with the
    other parents CANCELLED and the child never run."""
    parents = [f"p{i:02d}" for i in range(20)]
    insert_pipeline("p", {"child": parents})
    engine.start_batch(StartBatch("p", "b1"))
    messages = [as_run_task(m) for m in publisher.drain(EVENTS_TOPIC)]
    for message in messages[:5]:
        engine.run_task(message)
    engine.cancel_batch(CancelBatch("p", "b1"))
    assert batch_status(db, "p", "b1") == "CANCELLED"

    engine.rerun(Rerun(batch_id="b1", task="p10", pipeline="p"))
    drive(engine, publisher)

    assert batch_status(db, "p", "b1") == "CANCELLED"
    statuses = {t: s for t, (s, _) in rows(db, "p", "b1").items()}
    assert statuses["child"] == "CANCELLED"  # cancelled before it could start: a row says so
    assert list(statuses.values()).count("CANCELLED") == 15  # 14 parents and the child
