"""Applying pipeline files: the rows a user would write by hand, idempotently, in one
transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine, event, text
from sqlalchemy.exc import DBAPIError

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.errors import PipelineError
from dagrelay.messages import StartBatch
from dagrelay.pipelines.apply import ApplyResult
from dagrelay.pipelines.apply import apply as apply_pipeline
from dagrelay.pipelines.spec import PipelineSpec, PipelineTask, load_pipeline
from dagrelay.store.db import database_error
from dagrelay.store.reads import batch_report
from tests.integration.helpers import scalar

pytestmark = pytest.mark.integration

MONTHLY_PROFIT = (
    Path(__file__).resolve().parents[1] / "fixtures" / "pipelines" / "monthly_profit.yaml"
)
T1 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
T2 = datetime(2024, 3, 2, 12, 0, tzinfo=UTC)


def apply(db: Engine, spec: PipelineSpec, **kwargs: Any) -> ApplyResult:
    with db.begin() as conn:
        return apply_pipeline(conn, spec, **kwargs)


def write(tmp_path: Path, pipeline: str, tasks: list[dict[str, Any]]) -> PipelineSpec:
    path = tmp_path / f"{pipeline}.yaml"
    path.write_text(yaml.safe_dump({"pipeline": pipeline, "tasks": tasks}), encoding="utf-8")
    return load_pipeline(path)


def noop(name: str, *parents: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "handler": "python.noop", "parents": list(parents), **fields}


def task_rows(db: Engine) -> dict[str, dict[str, Any]]:
    with db.connect() as conn:
        rows = conn.execute(text("SELECT * FROM tasks ORDER BY name")).mappings().all()
    return {row["name"]: dict(row) for row in rows}


def edge_rows(db: Engine) -> dict[tuple[str, str], datetime]:
    sql = """
        SELECT p.name AS parent, c.name AS child, d.created_at
        FROM task_dependencies d
        JOIN tasks p ON p.task_id = d.parent_task_id
        JOIN tasks c ON c.task_id = d.child_task_id
    """
    with db.connect() as conn:
        return {(r.parent, r.child): r.created_at for r in conn.execute(text(sql))}


def test_monthly_profit_rows(db: Engine) -> None:
    result = apply(db, load_pipeline(MONTHLY_PROFIT), now=T1)

    assert result.created == ("load_sales", "load_expenses", "calculate_profit")
    assert (result.updated, result.unchanged, result.edges_removed) == ((), (), ())
    assert set(result.edges_added) == {
        ("load_sales", "calculate_profit"),
        ("load_expenses", "calculate_profit"),
    }
    rows = task_rows(db)
    common = {
        "pipeline": "monthly_profit",
        "trigger_rule": "all_success",
        "retry_backoff": 2.0,
        "retry_max_delay_s": 3600,
        "timeout_s": 540,
        "pool": None,
        "map": None,
        "enabled": True,
        "pool_slots": 1,
        "priority": 0,
        "max_active": None,
        "teardown": False,
        "deadline": None,
        "updates": [],
        "created_at": T1,
        "updated_at": T1,
    }
    loads = {"handler": "python.noop", "max_retries": 0, "retry_delay_s": 30}
    described = {t.name: t.description for t in load_pipeline(MONTHLY_PROFIT).tasks}
    expected = {
        "load_sales": {
            **common,
            **loads,
            "params": {"output": {"total": 1250.5}},
            "description": described["load_sales"],
        },
        "load_expenses": {
            **common,
            **loads,
            "params": {"output": {"total": 830.25}},
            "description": described["load_expenses"],
        },
        "calculate_profit": {
            **common,
            "description": described["calculate_profit"],
            "handler": "python.call",
            "params": {"callable": "dagrelay.examples.calculate_profit"},
            "max_retries": 2,
            "retry_delay_s": 5,
        },
    }
    assert {
        name: {k: v for k, v in row.items() if k not in ("task_id", "name")}
        for name, row in rows.items()
    } == expected
    assert edge_rows(db) == {
        ("load_sales", "calculate_profit"): T1,
        ("load_expenses", "calculate_profit"): T1,
    }


def test_applying_twice_changes_nothing(db: Engine) -> None:
    spec = load_pipeline(MONTHLY_PROFIT)
    apply(db, spec, now=T1)
    tasks_before, edges_before = task_rows(db), edge_rows(db)

    again = apply(db, spec, now=T2)

    assert again.changes == 0
    assert again.unchanged == ("load_sales", "load_expenses", "calculate_profit")
    assert str(again) == "0 created, 0 updated, 3 unchanged; 0 edges added, 0 removed"
    assert task_rows(db) == tasks_before  # updated_at included
    assert edge_rows(db) == edges_before


def test_same_rows_as_plain_sql(db: Engine, insert_pipeline: Callable[..., dict[str, int]]) -> None:
    """A pipeline a user inserted by hand, identical to the file: applying it changes nothing."""
    insert_pipeline(
        "monthly_profit",
        {"calculate_profit": ["load_sales", "load_expenses"]},
        handlers={"calculate_profit": "python.call"},
        params={
            "load_sales": '{"output": {"total": 1250.5}}',
            "load_expenses": '{"output": {"total": 830.25}}',
            "calculate_profit": '{"callable": "dagrelay.examples.calculate_profit"}',
        },
    )
    with db.begin() as conn:
        conn.execute(
            text("UPDATE tasks SET max_retries = 2, retry_delay_s = 5 WHERE name = :n"),
            {"n": "calculate_profit"},
        )
        for task in load_pipeline(MONTHLY_PROFIT).tasks:  # what the file says of each task
            conn.execute(
                text("UPDATE tasks SET description = :d WHERE name = :n"),
                {"n": task.name, "d": task.description},
            )
    before = task_rows(db)

    result = apply(db, load_pipeline(MONTHLY_PROFIT))

    assert result.changes == 0
    assert task_rows(db) == before


def test_changed_task_is_updated_alone(db: Engine, tmp_path: Path) -> None:
    apply(db, write(tmp_path, "p", [noop("a"), noop("b", "a")]), now=T1)

    result = apply(db, write(tmp_path, "p", [noop("a", timeout_s=60), noop("b", "a")]), now=T2)

    assert (result.created, result.updated, result.unchanged) == ((), ("a",), ("b",))
    rows = task_rows(db)
    assert (rows["a"]["timeout_s"], rows["a"]["created_at"], rows["a"]["updated_at"]) == (
        60,
        T1,
        T2,
    )
    assert rows["b"]["updated_at"] == T1


def test_changed_parents_remove_and_add_edges(db: Engine, tmp_path: Path) -> None:
    apply(db, write(tmp_path, "p", [noop("a"), noop("b", "a"), noop("c", "a", "b")]), now=T1)

    result = apply(db, write(tmp_path, "p", [noop("a", "b"), noop("b"), noop("c", "b")]), now=T2)

    assert set(result.edges_removed) == {("a", "b"), ("a", "c")}
    assert result.edges_added == (("b", "a"),)  # a reversed edge: removed first, then added
    assert result.updated == ()
    assert edge_rows(db) == {("b", "c"): T1, ("b", "a"): T2}


def test_two_pipelines_may_have_tasks_of_the_same_name(db: Engine, tmp_path: Path) -> None:
    apply(db, write(tmp_path, "first", [noop("shared"), noop("mine")]))

    result = apply(db, write(tmp_path, "second", [noop("new"), noop("shared", "new")]))

    assert result.created == ("new", "shared")
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT t.pipeline, t.name, count(d.parent_task_id) FROM tasks t "
                "LEFT JOIN task_dependencies d ON d.child_task_id = t.task_id "
                "GROUP BY t.task_id ORDER BY 1, 2"
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("first", "mine", 0),
        ("first", "shared", 0),  # untouched by the second pipeline's file
        ("second", "new", 0),
        ("second", "shared", 1),
    ]


def test_tasks_missing_from_the_file_are_reported_and_kept(db: Engine, tmp_path: Path) -> None:
    apply(db, write(tmp_path, "p", [noop("a"), noop("b", "a"), noop("c", "b")]))

    result = apply(db, write(tmp_path, "p", [noop("a")]))

    assert result.not_in_file == ("b", "c")
    assert result.pruned == ()
    assert str(result).endswith(
        "; live tasks not in the file (they still run; --prune removes them): b, c"
    )
    assert set(task_rows(db)) == {"a", "b", "c"}
    assert set(edge_rows(db)) == {("a", "b"), ("b", "c")}  # kept tasks keep their parents


def test_prune_deletes_them(db: Engine, tmp_path: Path) -> None:
    apply(db, write(tmp_path, "p", [noop("a"), noop("b", "a"), noop("c", "b")]))
    apply(db, write(tmp_path, "other", [noop("x")]))

    result = apply(db, write(tmp_path, "p", [noop("a")]), prune=True)

    assert (result.not_in_file, result.pruned) == (("b", "c"), ("b", "c"))
    assert set(task_rows(db)) == {"a", "x"}
    assert edge_rows(db) == {}
    assert apply(db, write(tmp_path, "p", [noop("a")]), prune=True).changes == 0


def test_prune_removes_tasks_batches_ran_and_they_keep_them(
    db: Engine, engine: DagEngine, tmp_path: Path
) -> None:
    apply(db, write(tmp_path, "p", [noop("a"), noop("b"), noop("c", "a")]))
    engine.start_batch(StartBatch(pipeline="p", batch_id="b1"))

    result = apply(db, write(tmp_path, "p", [noop("c")]), prune=True)
    engine.start_batch(StartBatch(pipeline="p", batch_id="b2"))

    assert result.pruned == ("a", "b")
    assert set(task_rows(db)) == {"c"}
    with db.connect() as conn:
        (old,) = batch_report(conn, "b1", "p")
        (new,) = batch_report(conn, "b2", "p")
    assert (old["version"], sorted(t["task"] for t in old["tasks"])) == (1, ["a", "b"])
    assert (new["version"], sorted(t["task"] for t in new["tasks"])) == (2, ["c"])


def test_graph_problems_are_refused_before_writing(db: Engine) -> None:
    spec = PipelineSpec(
        pipeline="p",
        tasks=(
            PipelineTask("a", "h", parents=("b",)),
            PipelineTask("b", "h", parents=("a",)),
        ),
        source="p.yaml",
    )

    with pytest.raises(PipelineError, match=r"p\.yaml: cycle: a -> b -> a"):
        apply(db, spec)

    assert task_rows(db) == {}


def test_database_refusal_becomes_a_pipeline_error(db: Engine) -> None:
    """What the file's schema normally stops, the database refuses too; its message is kept."""
    spec = PipelineSpec(
        pipeline="p", tasks=(PipelineTask("no spaces allowed", "h"),), source="p.yaml"
    )

    with pytest.raises(PipelineError) as raised:
        apply(db, spec)

    refused = 'new row for relation "tasks" violates check constraint "tasks_name_format"'
    assert raised.value.problems == [f"p.yaml: the database refused the pipeline: {refused}"]
    assert task_rows(db) == {}


def test_hand_written_edge_between_file_tasks_is_replaced(db: Engine, tmp_path: Path) -> None:
    """The file is authoritative for its tasks' parents: a hand-written edge c -> a goes before
    the file's b -> c is added (which, with it, would close a cycle)."""
    apply(db, write(tmp_path, "p", [noop("a"), noop("b", "a")]))
    with db.begin() as conn:
        conn.execute(text("INSERT INTO tasks (name, pipeline, handler) VALUES ('c', 'p', 'h')"))
        conn.execute(
            text(
                "INSERT INTO task_dependencies (child_task_id, parent_task_id) "
                "SELECT a.task_id, c.task_id FROM tasks a, tasks c "
                "WHERE a.name = 'a' AND c.name = 'c'"
            )
        )

    result = apply(db, write(tmp_path, "p", [noop("a"), noop("b", "a"), noop("c", "b")]))

    assert result.edges_removed == (("c", "a"),)
    assert result.edges_added == (("b", "c"),)
    assert result.updated == ("c",)  # its handler was 'h'


def test_dependency_guard_error_is_read(
    db: Engine, insert_pipeline: Callable[..., dict[str, int]]
) -> None:
    """The SQLSTATE and message of the trigger's refusal, as apply reports them."""
    ids = insert_pipeline("p", {"b": ["a"]})
    with pytest.raises(DBAPIError) as raised, db.begin() as conn:
        conn.execute(
            text("INSERT INTO task_dependencies (child_task_id, parent_task_id) VALUES (:c, :p)"),
            {"c": ids["a"], "p": ids["b"]},
        )

    assert database_error(raised.value) == (
        "23514",
        'dependency "b" -> "a" would create a cycle: a -> b -> a',
    )


def row_versions(db: Engine) -> dict[str, str]:
    """The xmin (writing transaction) of every task and edge row: a write changes it."""
    sql = """
        SELECT name, xmin::text FROM tasks
        UNION ALL
        SELECT p.name || '->' || c.name, d.xmin::text FROM task_dependencies d
        JOIN tasks p ON p.task_id = d.parent_task_id JOIN tasks c ON c.task_id = d.child_task_id
    """
    with db.connect() as conn:
        return {r[0]: r[1] for r in conn.execute(text(sql))}


def counted_apply(db: Engine, spec: PipelineSpec, **kwargs: Any) -> tuple[ApplyResult, list[str]]:
    """Apply, and the first word of each statement it ran."""
    statements: list[str] = []
    with db.begin() as conn:
        listen = lambda *args: statements.append(args[2].split()[0])  # noqa: E731
        event.listen(conn, "before_cursor_execute", listen)
        try:
            result = apply_pipeline(conn, spec, **kwargs)
        finally:
            event.remove(conn, "before_cursor_execute", listen)
    return result, statements


def diamond(tmp_path: Path, timeout_of_b: int = 540) -> PipelineSpec:
    return write(
        tmp_path,
        "p",
        [noop("a"), noop("b", "a", timeout_s=timeout_of_b), noop("c", "a"), noop("d", "b", "c")],
    )


def test_a_no_op_apply_only_reads(db: Engine, tmp_path: Path) -> None:
    apply(db, diamond(tmp_path))
    before = row_versions(db)

    result, statements = counted_apply(db, diamond(tmp_path))

    assert result.changes == 0
    assert row_versions(db) == before
    # the apply lock, tasks, edges, the schedule and the asset schedule (to say whether one is
    # left in place)
    assert statements == ["SELECT", "SELECT", "SELECT", "SELECT", "SELECT"]


def test_one_changed_task_writes_that_row_alone(db: Engine, tmp_path: Path) -> None:
    apply(db, diamond(tmp_path))
    before = row_versions(db)

    result, statements = counted_apply(db, diamond(tmp_path, timeout_of_b=60))

    assert (result.updated, result.changes) == (("b",), 1)
    after = row_versions(db)
    assert {name for name in before if after[name] != before[name]} == {"b"}
    assert statements == ["SELECT", "SELECT", "SELECT", "UPDATE", "SELECT", "SELECT"]


def test_apply_in_progress_does_not_block_a_running_batch(db: Engine, tmp_path: Path) -> None:
    """While an apply that changes a task is uncommitted, a batch of the pipeline starts: its
    version is read from the live rows (the committed ones) without waiting for the apply."""
    apply(db, diamond(tmp_path))
    with db.begin() as conn:
        apply_pipeline(conn, diamond(tmp_path, timeout_of_b=60))
        with db.connect() as other:
            other.execute(text("SET lock_timeout = '2s'"))
            other.execute(
                text(
                    "INSERT INTO batches (pipeline, batch_id, version_id) "
                    "VALUES ('p', 'b1', dagrelay_pipeline_version('p', now()))"
                )
            )
            other.execute(
                text(
                    "INSERT INTO task_log (pipeline, batch_id, task_id) "
                    "SELECT 'p', 'b1', task_id FROM tasks WHERE pipeline = 'p'"
                )
            )
            other.commit()
    assert scalar(db, "SELECT count(*) FROM task_log WHERE batch_id = 'b1'") == 4
