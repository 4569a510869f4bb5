"""The database guards the DAG: self-edges, cycles, cross-pipeline edges, edge updates and task
moves are rejected with a message naming the tasks."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from tests.integration.helpers import run_together, scalar, wait_for

pytestmark = pytest.mark.integration

InsertPipeline = Callable[..., dict[str, int]]
ADD_EDGE = text(
    "INSERT INTO task_dependencies (child_task_id, parent_task_id) "
    "SELECT c.task_id, p.task_id FROM tasks c, tasks p WHERE c.name = :child AND p.name = :parent"
)


def add_edge(db: Engine, child: str, parent: str) -> None:
    with db.begin() as conn:
        conn.execute(ADD_EDGE, {"child": child, "parent": parent})


@pytest.fixture
def tasks(insert_pipeline: InsertPipeline) -> None:
    # p: a -> b -> c, plus d alone; q: x alone
    insert_pipeline("p", {"a": [], "b": ["a"], "c": ["b"], "d": []})
    insert_pipeline("q", {"x": []})


@pytest.mark.usefixtures("tasks")
@pytest.mark.parametrize(
    ("child", "parent", "message"),
    [
        pytest.param("a", "a", 'task "a" cannot depend on itself', id="self edge"),
        pytest.param(
            "a", "b", 'dependency "b" -> "a" would create a cycle: a -> b -> a', id="2-cycle"
        ),
        pytest.param(
            "a", "c", 'dependency "c" -> "a" would create a cycle: a -> b -> c -> a', id="3-cycle"
        ),
        pytest.param(
            "x", "a", 'dependency "a" -> "x" crosses pipelines ("p" and "q")', id="cross pipeline"
        ),
    ],
)
def test_bad_edge_is_rejected_naming_the_tasks(
    db: Engine, child: str, parent: str, message: str
) -> None:
    with pytest.raises(DBAPIError, match="23514") as info:
        add_edge(db, child, parent)
    assert message in str(info.value)
    assert scalar(db, "SELECT count(*) FROM task_dependencies") == 2


@pytest.mark.usefixtures("tasks")
def test_good_edges_are_accepted(db: Engine) -> None:
    add_edge(db, "c", "a")  # a shortcut is not a cycle
    add_edge(db, "d", "c")
    assert scalar(db, "SELECT count(*) FROM task_dependencies") == 4


@pytest.mark.usefixtures("tasks")
def test_updating_an_edge_is_rejected_naming_the_tasks(db: Engine) -> None:
    """Edges are immutable; the message should say which edge was touched."""
    with pytest.raises(DBAPIError) as info, db.begin() as conn:
        conn.execute(
            text(
                "UPDATE task_dependencies SET parent_task_id = "
                "(SELECT task_id FROM tasks WHERE name = 'd') "
                "WHERE child_task_id = (SELECT task_id FROM tasks WHERE name = 'c')"
            )
        )
    error = str(info.value)
    assert "immutable" in error
    assert '"b"' in error
    assert '"c"' in error


@pytest.mark.usefixtures("tasks")
def test_moving_a_task_with_edges_to_another_pipeline_is_rejected(db: Engine) -> None:
    with pytest.raises(DBAPIError) as info, db.begin() as conn:
        conn.execute(text("UPDATE tasks SET pipeline = 'q' WHERE name = 'c'"))
    assert 'task "c" cannot move to pipeline "q": it has a dependency with task "b"' in str(
        info.value
    )
    with db.begin() as conn:  # a task without edges may move
        conn.execute(text("UPDATE tasks SET pipeline = 'q' WHERE name = 'd'"))
    assert scalar(db, "SELECT pipeline FROM tasks WHERE name = 'd'") == "q"


def _try_edge(db: Engine, child: str, parent: str) -> str:
    try:
        add_edge(db, child, parent)
    except DBAPIError as exc:
        return "rejected" if "would create a cycle" in str(exc) else f"other error: {exc}"
    return "added"


@pytest.mark.usefixtures("tasks")
@pytest.mark.parametrize("round_", range(5))
def test_concurrent_halves_of_a_cycle_one_wins(db: Engine, round_: int) -> None:
    """Edges c -> d and d -> a close the cycle a -> b -> c -> d -> a; each is added by its own
    transaction, both released at once: the advisory lock lets exactly one in."""
    edges = [("d", "c"), ("a", "d")] if round_ % 2 else [("a", "d"), ("d", "c")]
    results = run_together([partial(_try_edge, db, *edge) for edge in edges])
    assert sorted(results) == ["added", "rejected"]
    assert scalar(db, "SELECT count(*) FROM task_dependencies") == 3


@pytest.mark.usefixtures("tasks")
def test_second_half_of_a_cycle_waits_for_the_first(db: Engine) -> None:
    """Deterministic interleaving: the second insert blocks on the pipeline's advisory lock
    while the first is uncommitted, then sees its edge and is rejected."""
    first_inserted, release_first = threading.Event(), threading.Event()

    def first() -> str:
        with db.begin() as conn:
            conn.execute(ADD_EDGE, {"child": "d", "parent": "c"})
            first_inserted.set()
            assert release_first.wait(30)
        return "added"

    def second() -> str:
        assert first_inserted.wait(30)
        return _try_edge(db, "a", "d")

    def release_when_second_waits() -> None:
        wait_for(
            lambda: (
                scalar(
                    db,
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND NOT granted AND database = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database())",
                )
                == 1
            ),
            what="the second insert to wait on the advisory lock",
        )
        release_first.set()

    results = run_together([first, second, release_when_second_waits])
    assert results[:2] == ["added", "rejected"]


def _waiting_locks(db: Engine) -> int:
    return int(
        scalar(
            db,
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())",
        )
    )


def _insert_and_finish(conn: Connection, child: str, parent: str) -> str:
    """Add the edge in the connection's open transaction and commit; what happened."""
    try:
        conn.execute(ADD_EDGE, {"child": child, "parent": parent})
        conn.commit()
    except DBAPIError as exc:
        conn.rollback()
        return str(exc.orig)
    return "added"


@pytest.mark.usefixtures("tasks")
@pytest.mark.parametrize(
    ("isolation", "refusal"),
    [
        ("READ COMMITTED", 'dependency "d" -> "a" would create a cycle: a -> d -> a'),
        ("REPEATABLE READ", "could not serialize access"),
        ("SERIALIZABLE", "could not serialize access"),
    ],
)
@pytest.mark.parametrize("second_inserts", ["while the first is open", "after the first commits"])
def test_halves_of_a_cycle_from_two_snapshots_are_refused(
    db: Engine, isolation: str, refusal: str, second_inserts: str
) -> None:
    """Two transactions take their snapshots, then each adds one edge of the 2-cycle a -> d -> a,
    then both commit. Neither snapshot holds the other's edge; the second must still be refused
    (a cycle error, or a serialization failure the caller retries) and no cycle may remain."""
    with (
        db.connect().execution_options(isolation_level=isolation) as first,
        db.connect().execution_options(isolation_level=isolation) as second,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        for conn in (first, second):
            conn.execute(text("SELECT count(*) FROM task_dependencies"))  # the snapshot
        first.execute(ADD_EDGE, {"child": "d", "parent": "a"})
        if second_inserts == "after the first commits":
            first.commit()
            outcome = _insert_and_finish(second, "a", "d")
        else:
            pending = pool.submit(_insert_and_finish, second, "a", "d")
            wait_for(lambda: _waiting_locks(db) == 1, what="the second insert to wait")
            first.commit()
            outcome = pending.result(timeout=30)

    assert refusal in outcome
    cycle_edges = scalar(
        db,
        "SELECT count(*) FROM task_dependencies d JOIN tasks c ON c.task_id = d.child_task_id "
        "JOIN tasks p ON p.task_id = d.parent_task_id "
        "WHERE (c.name, p.name) IN (('d', 'a'), ('a', 'd'))",
    )
    assert cycle_edges == 1


def _stacked_diamonds(count: int) -> dict[str, list[str]]:
    """t0 -> l0, r0 -> t1 -> ... -> t<count>: 2^count paths from top to bottom."""
    edges: dict[str, list[str]] = {"t0": []}
    for k in range(count):
        edges[f"l{k}"] = [f"t{k}"]
        edges[f"r{k}"] = [f"t{k}"]
        edges[f"t{k + 1}"] = [f"l{k}", f"r{k}"]
    return edges


def test_stacked_diamonds_are_checked_in_linear_time(
    db: Engine, insert_pipeline: InsertPipeline
) -> None:
    """20 stacked diamonds hold 2^20 paths from top to bottom; a check that visits each task once
    answers within a statement timeout a path enumeration could never meet."""
    insert_pipeline("p", {**_stacked_diamonds(20), "root": []})
    with db.begin() as conn:
        conn.execute(text("SET LOCAL statement_timeout = '5s'"))
        conn.execute(ADD_EDGE, {"child": "t0", "parent": "root"})
    with db.connect() as conn:
        conn.execute(text("SET statement_timeout = '5s'"))
        with pytest.raises(DBAPIError, match="23514") as info:
            conn.execute(ADD_EDGE, {"child": "t0", "parent": "t20"})
    path = " -> ".join(name for k in range(20) for name in (f"t{k}", f"l{k}"))
    assert f'dependency "t20" -> "t0" would create a cycle: {path} -> t20 -> t0' in str(info.value)
