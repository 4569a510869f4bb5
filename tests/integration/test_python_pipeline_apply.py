"""A Python pipeline applies to the same rows as its YAML file, round-trips through export, and
a cycle is refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from dagrelay.errors import PipelineError
from dagrelay.pipelines.api import Pipeline
from dagrelay.pipelines.apply import apply
from dagrelay.pipelines.export import export_yaml, read_pipeline
from dagrelay.pipelines.spec import load_pipeline
from tests.unit.test_python_pipelines import EXAMPLE, build_example

pytestmark = pytest.mark.integration


def rows(db: Engine) -> list[tuple[object, ...]]:
    with db.connect() as conn:
        tasks = conn.execute(
            text(
                "SELECT name, pipeline, handler, params::text, trigger_rule::text, max_retries, "
                "retry_delay_s, retry_backoff, retry_max_delay_s, timeout_s, pool, enabled, "
                "pool_slots, priority, max_active, map::text "
                "FROM tasks ORDER BY name"
            )
        ).all()
        edges = conn.execute(
            text(
                "SELECT p.name, c.name FROM task_dependencies d JOIN tasks p "
                "ON p.task_id = d.parent_task_id JOIN tasks c ON c.task_id = d.child_task_id "
                "ORDER BY 1, 2"
            )
        ).all()
        schedule = conn.execute(
            text("SELECT cron, timezone, catchup, overlap, paused FROM schedules")
        ).all()
    return [tuple(r) for r in [*tasks, *edges, *schedule]]


def test_python_and_yaml_write_the_same_rows(db: Engine, db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "all.yaml"
    path.write_text(EXAMPLE)
    with db.begin() as conn:
        apply(conn, build_example().spec())
    from_python = rows(db)
    with db.begin() as conn:
        exported = export_yaml(read_pipeline(conn, "pyapi_all"))
        again = apply(conn, load_pipeline(path))
    assert again.changes == 0, again
    assert rows(db) == from_python
    assert len(from_python) == 6 + 5 + 1
    exported_path = tmp_path / "exported.yaml"
    exported_path.write_text(exported)
    with db.begin() as conn:
        assert apply(conn, load_pipeline(exported_path)).changes == 0


def test_a_cycle_is_refused_before_anything_is_written(db: Engine) -> None:
    p = Pipeline("pyapi_cycle")
    p.noop("pyapi_cycle.a")
    p.noop("pyapi_cycle.b", parents=["pyapi_cycle.a", "pyapi_cycle.c"])
    p.noop("pyapi_cycle.c", parents=["pyapi_cycle.b"])
    with pytest.raises(PipelineError) as caught, db.begin() as conn:
        apply(conn, p.spec())
    assert caught.value.problems == [
        "pipeline pyapi_cycle: cycle: pyapi_cycle.b -> pyapi_cycle.c -> pyapi_cycle.b"
    ]
    assert rows(db) == []
