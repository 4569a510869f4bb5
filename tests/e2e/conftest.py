"""The whole local stack for end-to-end tests: the session's Pub/Sub emulator, a database of
the session's own, the router under functions-framework behind a push subscription; the release
wheel and sdist built once per run (tests/dist_cache.py).

The stacks' Python processes are forked by a zygote of each pytest worker
(dagrelay/local/forkserver.py) rather than each importing dagrelay again; a ``dagrelay local
up`` a test starts inherits the switch. DAGRELAY_LOCAL_FORK_SERVER=0 turns it off."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from google.cloud import pubsub_v1
from sqlalchemy import Engine, create_engine

from dagrelay.local import forkserver
from dagrelay.local.processes import wait_for
from dagrelay.local.stack import Stack, StackConfig, StackInfo
from dagrelay.store.reads import batch_report
from tests.db_fixtures import (
    db,
    db_url,
    empty_db_url,
    engine,
    fresh_db_url,
    insert_pipeline,
    publisher,
    template_db,
    worker_db,
)
from tests.dbtools import create_database, drop_database
from tests.dist_cache import shared_dist
from tests.pubsub_fixtures import pubsub_emulator

# The database and emulator fixtures, loaded here rather than in the root conftest (unit tier).
__all__ = [
    "db",
    "db_url",
    "empty_db_url",
    "engine",
    "fresh_db_url",
    "insert_pipeline",
    "publisher",
    "pubsub_emulator",
    "shared_dist",
    "template_db",
    "worker_db",
]

pytestmark = pytest.mark.e2e

os.environ.setdefault(forkserver.ENV, "1")


@pytest.fixture(scope="session")
def stack_db_url(template_db: str) -> Iterator[str]:
    name = f"dagrelay_e2e_{uuid.uuid4().hex[:8]}"
    yield create_database(name, template=template_db)
    drop_database(name)


@pytest.fixture(scope="session")
def stack(
    pubsub_emulator: str, stack_db_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, StackInfo]]:
    config = StackConfig(
        database_url=stack_db_url,
        project_id="dagrelay-test",
        events_topic="dagrelay-events-e2e",
        subscription="dagrelay-events-e2e-router",
        emulator_host=pubsub_emulator,
        data_services=False,  # the tests on this stack run python handlers only
        functions=("router",),  # test_dashboard_browser.py adds the dashboards (Stack.serve)
        workdir=tmp_path_factory.mktemp("stack"),
    )
    stack = Stack(config)
    info = stack.start()
    yield stack, info
    stack.stop()


@pytest.fixture(scope="session")
def stack_db(stack: tuple[Stack, StackInfo]) -> Iterator[Engine]:
    engine = create_engine(stack[1].database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def publish(stack: tuple[Stack, StackInfo]) -> Callable[..., str]:
    """Publish to the stack's events topic: a dict as JSON, or raw bytes."""
    info = stack[1]
    client = pubsub_v1.PublisherClient()
    topic = client.topic_path(info.project_id, info.events_topic)

    def send(message: dict[str, Any] | bytes, **attributes: str) -> str:
        data = message if isinstance(message, bytes) else json.dumps(message).encode()
        if isinstance(message, dict) and "action" in message:
            attributes.setdefault("action", str(message["action"]))
        return str(client.publish(topic, data, **attributes).result(timeout=30))

    return send


@pytest.fixture(scope="session")
def wait_batch(stack: tuple[Stack, StackInfo], stack_db: Engine) -> Callable[..., dict[str, Any]]:
    """Wait (deadline, no sleeps) until a batch leaves RUNNING; return its report."""

    def wait(pipeline: str, batch_id: str, timeout_s: float = 60) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def done() -> bool:
            stack[0].check_alive()
            with stack_db.connect() as conn:
                found[:] = batch_report(conn, batch_id, pipeline)
            return bool(found) and found[0]["status"] != "RUNNING"

        wait_for(done, timeout_s, f"batch {pipeline}/{batch_id}", poll_s=0.05)
        return found[0]

    return wait
