"""The Pub/Sub emulator fixture (loaded by tests/integration/conftest.py and
tests/e2e/conftest.py): one real emulator per pytest process, so one per xdist worker, on a free
port of its own; tests use unique topic and subscription names so none sees another's messages
(ARCHITECTURE.md, "Local stack")."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from dagrelay.local import processes


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
