"""Migrations: upgrade from empty, downgrade to base and back; models and enums match."""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import CheckConstraint, Engine, create_engine, text

from dagrelay.states import BatchStatus, FileStatus, TaskStatus, TriggerRule
from dagrelay.store import migrate
from dagrelay.store.models import Base

pytestmark = pytest.mark.integration

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
    assert {m.__tablename__ for m in Base.__subclasses__()} == built["tables"]
    assert built["types"] == {"task_status", "batch_status", "trigger_rule", "file_status"}
    assert {"dagrelay_trigger_decision", "dagrelay_guard_dependency"} <= built["functions"]
    assert {"task_dependencies_guard", "tasks_pipeline_guard"} <= built["triggers"]

    migrate.downgrade(empty_db)
    assert migrate.current(empty_db) is None
    assert objects(empty_db) == {k: set() for k in OURS}

    migrate.upgrade(empty_db)
    assert objects(empty_db) == built


def test_models_match_the_migrated_schema(db: Engine) -> None:
    with db.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_check_constraints_are_in_the_models(db: Engine) -> None:
    """Alembic's autogenerate does not compare CHECK constraints; compare their names."""
    with db.connect() as conn:
        in_db = set(
            conn.execute(
                text(
                    "SELECT c.conrelid::regclass::text || '.' || c.conname FROM pg_constraint c "
                    "JOIN pg_namespace n ON n.oid = c.connamespace "
                    "WHERE c.contype = 'c' AND n.nspname = 'public'"
                )
            ).scalars()
        )
    in_models = {
        f"{table.name}.{constraint.name}"
        for table in Base.metadata.tables.values()
        for constraint in table.constraints
        if isinstance(constraint, CheckConstraint)
    }
    assert sorted(in_db - in_models) == []  # in the migration, missing from models.py
    assert sorted(in_models - in_db) == []  # in models.py, missing from the migration


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
