"""Shared fixtures.

Databases: the schema is built once per session into a template database; each test that asks
for ``db_url`` gets its own clone (CREATE DATABASE ... TEMPLATE), dropped afterwards.
Pub/Sub: one real emulator per session, with unique topic and subscription names per test so no
test sees another's messages (ARCHITECTURE.md, "Local stack").
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from dagrelay.config import Settings, load_settings
from dagrelay.engine.core import Engine as DagEngine
from dagrelay.router.wiring import build_engine
from dagrelay.store import migrate
from dagrelay.store.db import create_db_engine
from dagrelay.store.outbox import InMemoryPublisher
from local_emulator import processes
from tests.dbtools import create_database, drop_database

# Fixtures of the local BigQuery and GCS stand-ins (the `local` extra).
pytest_plugins = ["tests.bq_fixtures", "tests.gcs_fixtures", "tests.integration.ingest_harness"]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

# The tests' python.call callables live in tests/: allow them as a deployment allows its own
# modules (in the environment, so a local stack's router started by a test inherits it), beside
# the defaults (a team project's packages, the example pipeline's callable).
os.environ.setdefault(
    "DAGRELAY_CALL_ALLOWED_PREFIXES", "tests,handlers,pipelines,dagrelay.examples"
)


@pytest.fixture(scope="session")
def template_db() -> Iterator[str]:
    name = f"dagrelay_tpl_{os.getpid()}"
    drop_database(name)
    engine = create_engine(create_database(name))
    migrate.upgrade(engine)
    engine.dispose()
    yield name
    drop_database(name)


@pytest.fixture
def empty_db_url() -> Iterator[str]:
    """A database with nothing in it (for migration tests)."""
    name = f"dagrelay_empty_{uuid.uuid4().hex[:12]}"
    yield create_database(name)
    drop_database(name)


@pytest.fixture
def db_url(template_db: str) -> Iterator[str]:
    """A fresh, migrated database of this test's own."""
    name = f"dagrelay_t_{uuid.uuid4().hex[:12]}"
    yield create_database(name, template=template_db)
    drop_database(name)


@pytest.fixture
def db(db_url: str) -> Iterator[Engine]:
    """This test's database through the engine the function builds (pool, pre-ping, pg8000
    statement cache)."""
    engine = create_db_engine(
        load_settings(database_url=db_url, db_pool_size=10, db_max_overflow=10)
    )
    yield engine
    engine.dispose()


class FakeClock:
    """An injectable clock: starts at a fixed instant, moves only when told to."""

    def __init__(self, start: datetime = datetime(2024, 3, 1, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def publisher() -> InMemoryPublisher:
    return InMemoryPublisher()


def engine_settings() -> Settings:
    """The settings every test engine is built with (the default topics)."""
    return Settings(
        worker_id="test",
        handler_modules=[],
        events_topic="dagrelay-events",
        alerts_topic="dagrelay-alerts",
    )


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


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Pub/Sub emulator for the session; sets PUBSUB_EMULATOR_HOST. Yields host:port."""
    port = processes.free_port()
    proc = processes.start_pubsub_emulator(port, "dagrelay-test", tmp_path_factory.mktemp("pubsub"))
    host = f"127.0.0.1:{port}"
    previous = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = host
    yield host
    if previous is None:
        os.environ.pop("PUBSUB_EMULATOR_HOST", None)
    else:
        os.environ["PUBSUB_EMULATOR_HOST"] = previous
    proc.stop()


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic, subscription and pipeline names."""
    return uuid.uuid4().hex[:8]
