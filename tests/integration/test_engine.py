"""The engine end to end against PostgreSQL, driven by draining the in-memory publisher."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import Engine, text

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.engine.core import RunOutcome, StartOutcome
from dagrelay.engine.sweeper import DEFAULT_OLDER_THAN_S, Sweeper
from dagrelay.errors import BadMessage
from dagrelay.messages import RunTask, StartBatch
from dagrelay.store.outbox import InMemoryPublisher
from tests.integration.helpers import (
    batch_status,
    call_params,
    disable,
    drive,
    scalar,
    statuses,
    task_rows,
)

pytestmark = pytest.mark.integration

InsertPipeline = Callable[..., dict[str, int]]
FAIL = {"handler": "python.fail"}


def test_start_batch_creates_batch_roots_and_messages(
    engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline, db: Engine
) -> None:
    insert_pipeline("p", {"a": [], "b": [], "c": ["a", "b"]})
    outcome = engine.start_batch(StartBatch("p", "b1", {"month": "03"}, triggered_by="me"), "m-1")

    assert outcome == StartOutcome(created=True, roots=2)
    assert statuses(db, "b1") == {"a": "NEW", "b": "NEW"}
    assert sorted(m.payload["task"] for m in publisher.drain()) == ["a", "b"]
    assert batch_status(db, "p", "b1") == "RUNNING"
    assert scalar(db, "SELECT params->>'month' FROM batches WHERE batch_id = 'b1'") == "03"
    assert scalar(db, "SELECT trigger_message_id FROM batches WHERE batch_id = 'b1'") == "m-1"
    assert scalar(db, "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL") == 2
    assert scalar(db, "SELECT parents FROM task_fanin WHERE batch_id = 'b1'") == 2


def test_same_batch_twice_is_a_no_op(
    engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline, db: Engine
) -> None:
    insert_pipeline("p", {"a": []})
    engine.start_batch(StartBatch("p", "b1"))
    publisher.drain()

    assert engine.start_batch(StartBatch("p", "b1")) == StartOutcome(created=False, roots=0)
    assert publisher.drain() == []
    assert scalar(db, "SELECT count(*) FROM task_log") == 1
    assert scalar(db, "SELECT count(*) FROM outbox") == 1


def test_start_task_runs_only_it_and_downstream(
    engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline, db: Engine
) -> None:
    # a -> b -> c <- d ; a -> x   (d is c's parent outside the scope of b)
    insert_pipeline("p", {"a": [], "b": ["a"], "c": ["b", "d"], "d": [], "x": ["a"]})
    engine.start_batch(StartBatch("p", "b1", start_task="b"))
    drive(engine, publisher)

    assert statuses(db, "b1") == {"b": "SUCCESS", "c": "SUCCESS"}
    assert batch_status(db, "p", "b1") == "SUCCESS"


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (StartBatch("nope", "b1"), "unknown pipeline 'nope'"),
        (StartBatch("p", "b1", start_task="zz"), "start_task 'zz' is not a task of pipeline 'p'"),
    ],
)
def test_start_batch_rejects_unknown_names(
    engine: DagEngine, insert_pipeline: InsertPipeline, db: Engine, message: StartBatch, reason: str
) -> None:
    insert_pipeline("p", {"a": []})
    with pytest.raises(BadMessage, match=reason):
        engine.start_batch(message)
    assert scalar(db, "SELECT count(*) FROM batches") == 0


def test_run_task_for_unknown_task_or_missing_row(
    engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline
) -> None:
    insert_pipeline("p", {"a": [], "b": ["a"]})
    engine.start_batch(StartBatch("p", "b1"))
    with pytest.raises(BadMessage, match="unknown task 'ghost'"):
        engine.run_task(RunTask("b1", "ghost"))
    # a task of the version without a row yet (or reset by a rerun): a stale message, ignored
    assert engine.run_task(RunTask("b1", "b")) == RunOutcome.IGNORED


def test_linear_chain_runs_in_order(
    engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline, db: Engine
) -> None:
    insert_pipeline("p", {"a": [], "b": ["a"], "c": ["b"], "d": ["c"]})
    engine.start_batch(StartBatch("p", "b1"))
    outcomes = drive(engine, publisher)

    assert outcomes == [(t, RunOutcome.SUCCESS) for t in "abcd"]
    assert set(statuses(db, "b1").values()) == {"SUCCESS"}
    assert batch_status(db, "p", "b1") == "SUCCESS"


def test_children_read_parents_outputs_and_batch_params(
    engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline, db: Engine
) -> None:
    insert_pipeline(
        "p",
        {"a": [], "b": [], "c": ["a", "b"]},
        handlers={"c": "python.call"},
        params={
            "a": '{"output": {"rows": 5}}',
            "b": '{"output": {"file": "x.csv"}}',
            "c": call_params("echo_parents", label="{batch_id}/{month}"),
        },
    )
    engine.start_batch(StartBatch("p", "2024-03", {"month": "03"}))
    drive(engine, publisher)

    assert task_rows(db, "2024-03")["c"]["output"] == {
        "parents": {"a": {"rows": 5}, "b": {"file": "x.csv"}},
        "label": "2024-03/03",
    }


def test_failure_fails_descendants_with_root_cause_and_the_batch(
    engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline, db: Engine
) -> None:
    insert_pipeline(
        "p",
        {"a": [], "f": ["a"], "c": ["f"], "d": ["c", "ok"], "ok": ["a"]},
        handlers={"f": "python.fail"},
        params={"f": '{"message": "disk on fire"}'},
    )
    engine.start_batch(StartBatch("p", "b1"))
    outcomes = dict(drive(engine, publisher))
    rows = task_rows(db, "b1")

    assert outcomes["f"] == RunOutcome.ERROR
    assert {n: r["status"] for n, r in rows.items()} == {
        "a": "SUCCESS", "f": "ERROR", "ok": "SUCCESS", "c": "UPSTREAM_FAILED",
        "d": "UPSTREAM_FAILED",
    }  # fmt: skip
    assert "HandlerFailure: disk on fire" in rows["f"]["error"]
    assert rows["c"]["root_cause_log_id"] == rows["f"]["log_id"]
    assert rows["d"]["root_cause_log_id"] == rows["f"]["log_id"]
    assert batch_status(db, "p", "b1") == "FAILED"


def test_every_trigger_rule_end_to_end(
    engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline, db: Engine
) -> None:
    """ok succeeds, bad fails, off is disabled (SKIPPED); each child shows one rule's outcome."""
    expected = {
        "ok": ("SUCCESS", [], "all_success"),
        "bad": ("ERROR", [], "all_success"),
        "off": ("SKIPPED", [], "all_success"),
        "all_success_fail": ("UPSTREAM_FAILED", ["ok", "bad"], "all_success"),
        "all_success_skip": ("SKIPPED", ["ok", "off"], "all_success"),
        "all_done": ("SUCCESS", ["ok", "bad", "off"], "all_done"),
        "cleanup": ("SUCCESS", ["bad"], "all_failed"),
        "all_failed_skip": ("SKIPPED", ["ok", "bad"], "all_failed"),
        "one_success": ("SUCCESS", ["ok", "bad"], "one_success"),
        "one_success_none": ("UPSTREAM_FAILED", ["bad", "off"], "one_success"),
        "one_failed": ("SUCCESS", ["ok", "bad"], "one_failed"),
        "one_failed_none": ("SKIPPED", ["ok", "off"], "one_failed"),
        "none_failed": ("SUCCESS", ["ok", "off"], "none_failed"),
        "none_failed_fail": ("UPSTREAM_FAILED", ["ok", "bad"], "none_failed"),
        "after_cleanup": ("SUCCESS", ["cleanup"], "all_success"),
    }
    insert_pipeline(
        "p",
        {name: parents for name, (_, parents, _) in expected.items()},
        handlers={"bad": "python.fail"},
        rules={name: rule for name, (_, _, rule) in expected.items()},
    )
    disable(db, "off")
    engine.start_batch(StartBatch("p", "b1"))
    drive(engine, publisher)

    assert statuses(db, "b1") == {name: status for name, (status, _, _) in expected.items()}
    assert batch_status(db, "p", "b1") == "FAILED"


def test_disabled_root_skips_its_downstream(
    engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline, db: Engine
) -> None:
    insert_pipeline("p", {"r": [], "c": ["r"], "d": ["c"]})
    disable(db, "r")
    outcome = engine.start_batch(StartBatch("p", "b1"))

    assert outcome.roots == 1
    assert publisher.drain() == []
    assert statuses(db, "b1") == {"r": "SKIPPED", "c": "SKIPPED", "d": "SKIPPED"}
    assert batch_status(db, "p", "b1") == "SUCCESS"


def test_attempt_history_is_written(
    engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline, db: Engine
) -> None:
    insert_pipeline("p", {"a": [], "f": []}, handlers={"f": "python.fail"})
    engine.start_batch(StartBatch("p", "b1"))
    drive(engine, publisher)

    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT t.name, a.attempt, a.outcome::text, a.worker, a.error, "
                "a.started_at IS NOT NULL AND a.finished_at IS NOT NULL AS timed "
                "FROM task_attempts a JOIN tasks t ON t.task_id = a.task_id "
                "ORDER BY t.name"
            )
        ).all()
    assert [(r[0], r[1], r[2], r[3], r[5]) for r in rows] == [
        ("a", 1, "SUCCESS", "test", True),
        ("f", 1, "ERROR", "test", True),
    ]
    assert rows[0][4] is None
    assert "failed on purpose" in rows[1][4]


def test_outbox_rows_are_marked_published(
    engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline, db: Engine
) -> None:
    insert_pipeline("p", {"a": [], "b": ["a"], "c": ["a"]})
    engine.start_batch(StartBatch("p", "b1"))
    drive(engine, publisher)

    assert scalar(db, "SELECT count(*) FROM outbox") == 3
    assert scalar(db, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0
    assert scalar(db, "SELECT max(publish_attempts) FROM outbox") == 1


def test_failed_publish_stays_in_outbox_until_relayed(
    engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline, db: Engine
) -> None:
    insert_pipeline("p", {"a": [], "b": [], "c": ["a", "b"]})
    publisher.fail_with = RuntimeError("pubsub is down")
    engine.start_batch(StartBatch("p", "b1"))

    assert publisher.drain() == []
    unpublished = "SELECT count(*) FROM outbox WHERE published_at IS NULL"
    assert scalar(db, unpublished) == 2
    assert "pubsub is down" in scalar(db, "SELECT min(last_error) FROM outbox")

    publisher.fail_with = None
    sweeper = Sweeper(engine)
    assert sweeper.relay_outbox(DEFAULT_OLDER_THAN_S) == 0  # younger than 30 s
    assert sweeper.relay_outbox(older_than_s=0) == 2
    assert scalar(db, unpublished) == 0
    drive(engine, publisher)
    assert batch_status(db, "p", "b1") == "SUCCESS"


@pytest.mark.parametrize(
    "sql",
    [
        pytest.param("UPDATE task_log SET attempt = attempt + 1", id="re-claimed by a sweeper"),
        pytest.param("UPDATE task_log SET status = 'CANCELLED'", id="cancelled by an operator"),
    ],
)
def test_late_finish_is_rejected(
    engine: DagEngine,
    publisher: InMemoryPublisher,
    insert_pipeline: InsertPipeline,
    db: Engine,
    sql: str,
) -> None:
    db_url = db.url.render_as_string(hide_password=False)
    insert_pipeline(
        "p",
        {"z": [], "child": ["z"]},
        handlers={"z": "python.call"},
        params={"z": call_params("move_row_on", db_url=db_url, sql=sql)},
    )
    engine.start_batch(StartBatch("p", "b1"))
    publisher.drain()
    before = task_rows(db, "b1")["z"]

    assert engine.run_task(RunTask("b1", "z")) == RunOutcome.IGNORED
    after = task_rows(db, "b1")["z"]
    assert after["status"] == ("CANCELLED" if "CANCELLED" in sql else "PROCESSING")
    assert before["attempt"] == 0
    assert "child" not in task_rows(db, "b1")
    assert publisher.drain() == []
    assert scalar(db, "SELECT count(*) FROM task_attempts WHERE finished_at IS NOT NULL") == 0


def test_duplicate_run_task_of_finished_task_is_ignored(
    engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline, db: Engine
) -> None:
    insert_pipeline("p", {"a": []})
    engine.start_batch(StartBatch("p", "b1"))
    drive(engine, publisher)

    assert engine.run_task(RunTask("b1", "a")) == RunOutcome.IGNORED
    assert task_rows(db, "b1")["a"]["attempt"] == 1
