"""Migrations: upgrade from empty, downgrade to base and back; what Python mirrors of the
schema (enums, task defaults) equals it."""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum

import pytest
from sqlalchemy import Engine, create_engine, text

from dagrelay.pipelines.spec import PipelineTask
from dagrelay.states import BatchStatus, FileStatus, TaskStatus, TriggerRule
from dagrelay.store import migrate

pytestmark = pytest.mark.integration

TABLES = {
    "tasks",
    "task_dependencies",
    "batches",
    "task_log",
    "task_attempts",
    "task_fanin",
    "map_groups",
    "outbox",
    "rejected_messages",
    "dead_letters",
    "file_log",
    "schedules",
    "pipeline_edge_writes",
    "pipelines",
    "pipeline_versions",
    "version_tasks",
    "version_edges",
    "pools",
    "deadline_misses",
    "asset_events",
    "asset_schedules",
    "asset_triggers",
    "signals",
    "deploys",
}

OURS = {
    "tables": """SELECT table_name FROM information_schema.tables
                 WHERE table_schema = 'public' AND table_name <> 'alembic_version'""",
    "types": """SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                WHERE n.nspname = 'public' AND t.typtype IN ('e', 'c', 'd')
                  AND t.typrelid = 0""",
    "functions": """SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                    WHERE n.nspname = 'public'""",
    "triggers": "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal",
}


@pytest.fixture
def empty_db(empty_db_url: str) -> Iterator[Engine]:
    engine = create_engine(empty_db_url)
    yield engine
    engine.dispose()


def objects(db: Engine) -> dict[str, set[str]]:
    with db.connect() as conn:
        return {kind: set(conn.execute(text(sql)).scalars()) for kind, sql in OURS.items()}


def test_upgrade_downgrade_upgrade(empty_db: Engine) -> None:
    assert objects(empty_db) == {k: set() for k in OURS}

    migrate.upgrade(empty_db)
    built = objects(empty_db)
    assert migrate.current(empty_db) == migrate.head()
    assert built["tables"] == TABLES
    assert built["types"] == {"task_status", "batch_status", "trigger_rule", "file_status"}
    assert {"dagrelay_trigger_decision", "dagrelay_guard_dependency"} <= built["functions"]
    assert {"task_dependencies_guard", "tasks_pipeline_guard"} <= built["triggers"]

    migrate.downgrade(empty_db)
    assert migrate.current(empty_db) is None
    assert objects(empty_db) == {k: set() for k in OURS}

    migrate.upgrade(empty_db)
    assert objects(empty_db) == built


def test_pipeline_task_defaults_are_the_column_defaults(db: Engine) -> None:
    """A task written with only its required columns gets what a pipeline file's task gets
    when it leaves every field out."""
    spec = PipelineTask(name="a", handler="python.noop")
    with db.begin() as conn:
        row = conn.execute(
            text(
                "INSERT INTO tasks (name, pipeline, handler) VALUES ('a', 'p', 'python.noop') "
                f"RETURNING {', '.join(spec.row())}"
            )
        ).one()
    stored = {**row._asdict(), "trigger_rule": TriggerRule(row.trigger_rule)}
    assert stored == {**spec.row(), "trigger_rule": spec.trigger_rule}


@pytest.mark.parametrize(
    ("enum", "db_type"),
    [
        (TaskStatus, "task_status"),
        (BatchStatus, "batch_status"),
        (TriggerRule, "trigger_rule"),
        (FileStatus, "file_status"),
    ],
)
def test_python_enum_equals_database_enum(db: Engine, enum: type[StrEnum], db_type: str) -> None:
    with db.connect() as conn:
        labels = conn.execute(text(f"SELECT unnest(enum_range(NULL::{db_type}))::text")).scalars()
        assert list(labels) == [member.value for member in enum]


def test_every_revision_steps_up_and_down(empty_db: Engine) -> None:
    """Each revision upgrades from the previous one and downgrades back to it."""
    previous = "base"
    for revision in migrate.revisions():
        before = objects(empty_db)
        migrate.upgrade(empty_db, revision)
        assert migrate.current(empty_db) == revision
        migrate.downgrade(empty_db, previous)
        assert objects(empty_db) == before, f"{revision} does not downgrade cleanly"
        migrate.upgrade(empty_db, revision)
        previous = revision
    assert migrate.current(empty_db) == migrate.head()
