"""Pipelines written the way a user writes them: plain SQL INSERTs."""

from __future__ import annotations

from sqlalchemy import Engine, text


def insert_with_sql(
    db: Engine, pipeline: str, tasks: dict[str, tuple[str, str]], edges: list[tuple[str, str]]
) -> None:
    """What a user does by hand: INSERTs into tasks and task_dependencies (parent, child)."""
    with db.begin() as conn:
        for name, (handler, params) in tasks.items():
            conn.execute(
                text(
                    "INSERT INTO tasks (name, pipeline, handler, params) "
                    "VALUES (:n, :p, :h, CAST(:params AS jsonb))"
                ),
                {"n": name, "p": pipeline, "h": handler, "params": params},
            )
        for parent, child in edges:
            conn.execute(
                text(
                    "INSERT INTO task_dependencies (child_task_id, parent_task_id) "
                    "SELECT c.task_id, p.task_id FROM tasks c, tasks p "
                    "WHERE c.name = :child AND p.name = :parent"
                ),
                {"child": child, "parent": parent},
            )
