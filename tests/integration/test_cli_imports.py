"""What a fresh interpreter loads for the ``dagrelay`` command (issue 19): each verb imports
what it needs when it runs. The entry module and every ``--help`` load no Pub/Sub client, no
google.cloud, no Alembic, no pyarrow, not the router's wiring, not even SQLAlchemy; a read verb
against a real database reads through pg8000 alone (``dagrelay.store.direct``): no SQLAlchemy and
no pydantic-settings either (with the database URL in the environment). ``make lint`` checks the
entry modules' imports statically (the ``cli-entry-light`` contract in pyproject.toml); this
checks what actually happens, lazy imports included. A subprocess each, hence integration."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.messages import StartBatch
from dagrelay.store.outbox import InMemoryPublisher
from tests.integration.helpers import drive

pytestmark = pytest.mark.integration

# Loaded by no read verb and no --help (a prefix matches the module and its submodules).
HEAVY = (
    "google.cloud",
    "google.api_core",
    "grpc",
    "alembic",
    "pyarrow",
    "dagrelay.router",
    "dagrelay.pubsub",
    "dagrelay.store.migrate",
)
# Loaded by no read verb given DATABASE_URL: it reads through pg8000 and the light settings path.
READ_PATH_HEAVY = ("sqlalchemy", "pydantic_settings")
# Loaded by no --help either: --help needs nothing but the commands' signatures.
DATABASE = ("sqlalchemy", "pg8000", "pydantic_settings", "dagrelay.store", "rich.table")
SHOW_MODULES = """\
import atexit, json, sys
out = sys.argv.pop(1)
def dump():
    with open(out, "w") as f:
        json.dump(sorted(sys.modules), f)
atexit.register(dump)
from dagrelay.cli import app
sys.argv[0] = "dagrelay"
app()
"""


def run_dagrelay(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> set[str]:
    """Run ``dagrelay ARGS`` in a fresh interpreter (as the console script does); the modules
    it had loaded when it exited. Fails on a non-zero exit code."""
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", SHOW_MODULES, str(out), *args],
        env={**os.environ, "COLUMNS": "120", **(env or {})},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(out.read_text()))


@functools.cache
def bare_python() -> frozenset[str]:
    """What ``python -c pass`` has loaded (site's .pth files add the google.cloud namespace)."""
    code = "import json, sys; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return frozenset(json.loads(done.stdout))


def loaded(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    """The modules matching a prefix (the module or its submodules) beyond bare Python's."""
    added = modules - bare_python()
    return sorted(m for m in added if any(m == p or m.startswith(p + ".") for p in prefixes))


def test_importing_the_entry_modules_loads_nothing_heavy() -> None:
    code = "import dagrelay.cli.app, dagrelay.cli, json, sys; print(json.dumps(list(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    modules = set(json.loads(done.stdout))
    assert "dagrelay.cli.trigger" in modules  # every verb registered
    assert loaded(modules, HEAVY + DATABASE) == []


@pytest.mark.parametrize(
    "verb",
    [
        [],
        ["status"],
        ["trigger"],
        ["explain"],
        ["history"],
        ["rejected"],
        ["backfill"],
        ["db", "upgrade"],
        ["schedule", "list"],
        ["pool", "set"],
        ["assets"],
    ],
    ids=lambda words: " ".join(words) or "dagrelay",
)
def test_help_loads_nothing_heavy(tmp_path: Path, verb: list[str]) -> None:
    modules = run_dagrelay(tmp_path, *verb, "--help")
    # pydantic too: Typer coerces a group's --help left out (None) through it (cli.app.Group).
    assert loaded(modules, (*HEAVY, *DATABASE, "pydantic")) == []


@pytest.fixture
def finished_batch(
    engine: DagEngine,
    publisher: InMemoryPublisher,
    insert_pipeline: Callable[..., dict[str, int]],
) -> None:
    insert_pipeline("imports", {"b": ["a"]})
    engine.start_batch(StartBatch("imports", "2024-03"))
    drive(engine, publisher)


@pytest.mark.usefixtures("finished_batch")
@pytest.mark.parametrize(
    "verb",
    [
        ["status", "2024-03"],
        ["status"],
        ["explain", "2024-03"],
        ["history", "2024-03", "b"],
        ["rejected"],
        ["schedule", "list"],
        ["pool", "list"],
        ["assets"],
    ],
    ids=" ".join,
)
def test_read_verbs_load_no_publisher_no_migrations_and_no_sqlalchemy(
    tmp_path: Path, db_url: str, verb: list[str]
) -> None:
    modules = run_dagrelay(tmp_path, *verb, env={"DATABASE_URL": db_url})
    assert "pg8000" in modules  # it did read the database
    assert loaded(modules, HEAVY + READ_PATH_HEAVY) == []


# The Pub/Sub client library: trigger publishes its one message through the REST API instead.
PUBSUB_CLIENT = ("google.cloud.pubsub_v1", "google.pubsub_v1", "google.api_core", "grpc")


def test_trigger_publishes_without_the_pubsub_client_library(
    tmp_path: Path, pubsub_emulator: str, unique: str
) -> None:
    from google.cloud import pubsub_v1  # noqa: PLC0415 - the test's own topic, in-process

    publisher = pubsub_v1.PublisherClient()
    publisher.create_topic(name=publisher.topic_path("dagrelay-test", f"imports-{unique}"))
    env = {"DAGRELAY_PROJECT_ID": "dagrelay-test", "DAGRELAY_EVENTS_TOPIC": f"imports-{unique}"}

    modules = run_dagrelay(tmp_path, "trigger", "p", "b1", "--no-check", env=env)

    assert loaded(modules, PUBSUB_CLIENT) == []
