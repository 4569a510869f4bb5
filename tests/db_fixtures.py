"""Database fixtures (loaded by tests/integration/conftest.py and tests/e2e/conftest.py).

The schema is migrated once per pytest process into a template database. ``db_url`` is the
process's own database (one per xdist worker), cloned from the template once and reset to it
before each test (tests/dbreset.py: the tables that hold rows truncated, seeded rows and
sequences put back), so a test starts from the migrated schema with no rows of another test.
A test that changes the schema (CREATE TABLE, ALTER TABLE, a trigger, a role's grant) carries
``@pytest.mark.fresh_db``: its ``db_url`` (and ``db``, ``engine``, ...) is then a clone of its
own, dropped afterwards; ``fresh_db_url`` asks for one explicitly. A test that changes the schema
without the marker fails its teardown saying so. ``empty_db_url`` is an empty database (for
migration tests).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, create_engine, text

from dagrelay.config import load_settings
from dagrelay.engine.core import Engine as DagEngine
from dagrelay.router.wiring import build_engine
from dagrelay.store import migrate
from dagrelay.store.db import create_db_engine
from dagrelay.store.outbox import InMemoryPublisher
from tests.conftest import FakeClock, engine_settings
from tests.dbreset import WorkerDatabase
from tests.dbtools import create_database, drop_database


@pytest.fixture(scope="session")
def template_db() -> Iterator[str]:
    """The name of a database migrated to head, this process's template."""
    name = f"dagrelay_tpl_{os.getpid()}"
    drop_database(name)
    engine = create_engine(create_database(name))
    migrate.upgrade(engine)
    engine.dispose()
    yield name
    drop_database(name)


@pytest.fixture(scope="session")
def worker_db(template_db: str) -> Iterator[WorkerDatabase]:
    """This process's database, shared by its tests one after another."""
    worker = WorkerDatabase(template_db, f"dagrelay_w_{os.getpid()}_{uuid.uuid4().hex[:6]}")
    yield worker
    worker.drop()


@pytest.fixture
def empty_db_url() -> Iterator[str]:
    """A database with nothing in it (for migration tests)."""
    name = f"dagrelay_empty_{uuid.uuid4().hex[:12]}"
    yield create_database(name)
    drop_database(name)


@pytest.fixture
def fresh_db_url(template_db: str) -> Iterator[str]:
    """A migrated database of this test's own (a clone of the template), dropped afterwards:
    for a test that changes the schema."""
    name = f"dagrelay_t_{uuid.uuid4().hex[:12]}"
    yield create_database(name, template=template_db)
    drop_database(name)


@pytest.fixture
def db_url(request: pytest.FixtureRequest, worker_db: WorkerDatabase) -> Iterator[str]:
    """A migrated database holding no rows but those the migrations seed: the process's
    database, reset; or, for a test marked ``fresh_db``, a database of its own."""
    if request.node.get_closest_marker("fresh_db") is not None:
        yield request.getfixturevalue("fresh_db_url")
        return
    yield worker_db.reset()
    worker_db.check_schema(request.node.nodeid)


@pytest.fixture
def db(db_url: str) -> Iterator[Engine]:
    """This test's database through the engine the function builds (pool, pre-ping, pg8000
    statement cache)."""
    engine = create_db_engine(
        load_settings(database_url=db_url, db_pool_size=10, db_max_overflow=10)
    )
    yield engine
    engine.dispose()


@pytest.fixture
def publisher() -> InMemoryPublisher:
    return InMemoryPublisher()


@pytest.fixture
def engine(db: Engine, publisher: InMemoryPublisher, clock: FakeClock) -> DagEngine:
    """The engine against this test's database, publishing into memory: built by the one wiring
    function, with the fakes passed in."""
    return build_engine(engine_settings(), db=db, publisher=publisher, clock=clock)


@pytest.fixture
def insert_pipeline(db: Engine) -> Callable[..., dict[str, int]]:
    """Insert a pipeline with plain SQL: ``insert_pipeline("p", {"b": ["a"]}, handlers={...})``.
    ``edges`` maps each task to its parents; returns {task name: task_id}."""

    def insert(
        pipeline: str,
        edges: dict[str, list[str]],
        handlers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        rules: dict[str, str] | None = None,
    ) -> dict[str, int]:
        handlers, params, rules = handlers or {}, params or {}, rules or {}
        names = sorted(set(edges) | {p for ps in edges.values() for p in ps})
        ids: dict[str, int] = {}
        with db.begin() as conn:
            for name in names:
                ids[name] = conn.execute(
                    text(
                        "INSERT INTO tasks (name, pipeline, handler, params, trigger_rule) "
                        "VALUES (:n, :p, :h, CAST(:params AS jsonb), CAST(:r AS trigger_rule)) "
                        "RETURNING task_id"
                    ),
                    {
                        "n": name,
                        "p": pipeline,
                        "h": handlers.get(name, "python.noop"),
                        "params": params.get(name, "{}"),
                        "r": rules.get(name, "all_success"),
                    },
                ).scalar_one()
            for child, parents in edges.items():
                for parent in parents:
                    conn.execute(
                        text(
                            "INSERT INTO task_dependencies (child_task_id, parent_task_id) "
                            "VALUES (:c, :p)"
                        ),
                        {"c": ids[child], "p": ids[parent]},
                    )
        return ids

    return insert
