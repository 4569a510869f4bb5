"""Revision 0006 (the linear, isolation-safe dependency guard) on a database holding data:
upgrading and downgrading keep every task and edge, and the downgrade restores the old guard."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError

from dagrelay.store import migrate

pytestmark = pytest.mark.integration

GUARD_SOURCE = "SELECT prosrc FROM pg_proc WHERE proname = 'dagrelay_guard_dependency'"
EDGES = """
    SELECT p.name || '->' || c.name FROM task_dependencies d
    JOIN tasks p ON p.task_id = d.parent_task_id JOIN tasks c ON c.task_id = d.child_task_id
    ORDER BY 1
"""
ADD_EDGE = """
    INSERT INTO task_dependencies (child_task_id, parent_task_id)
    SELECT c.task_id, p.task_id FROM tasks c, tasks p WHERE c.name = :child AND p.name = :parent
"""


@pytest.fixture
def at_0004(empty_db_url: str) -> Iterator[Engine]:
    """A database at revision 0004 holding the pipeline a -> b -> c."""
    engine = create_engine(empty_db_url)
    migrate.upgrade(engine, "0004")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tasks (name, pipeline, handler) "
                "VALUES ('a', 'p', 'h'), ('b', 'p', 'h'), ('c', 'p', 'h')"
            )
        )
        conn.execute(text(ADD_EDGE), {"child": "b", "parent": "a"})
        conn.execute(text(ADD_EDGE), {"child": "c", "parent": "b"})
    yield engine
    engine.dispose()


def rows(db: Engine, sql: str) -> list[str]:
    with db.connect() as conn:
        return list(conn.execute(text(sql)).scalars())


def refusal(db: Engine, child: str, parent: str) -> str:
    with pytest.raises(DBAPIError, match="23514") as raised, db.begin() as conn:
        conn.execute(text(ADD_EDGE), {"child": child, "parent": parent})
    return str(raised.value)


def test_upgrade_and_downgrade_keep_the_edges_and_the_message(at_0004: Engine) -> None:
    old_source = rows(at_0004, GUARD_SOURCE)
    cycle = 'dependency "c" -> "a" would create a cycle: a -> b -> c -> a'

    migrate.upgrade(at_0004, "0006")
    assert rows(at_0004, EDGES) == ["a->b", "b->c"]
    assert rows(at_0004, GUARD_SOURCE) != old_source
    assert cycle in refusal(at_0004, "a", "c")
    assert rows(at_0004, "SELECT pipeline FROM pipeline_edge_writes") == []  # rolled back

    migrate.downgrade(at_0004, "0004")
    assert rows(at_0004, EDGES) == ["a->b", "b->c"]
    assert rows(at_0004, GUARD_SOURCE) == old_source
    assert cycle in refusal(at_0004, "a", "c")
