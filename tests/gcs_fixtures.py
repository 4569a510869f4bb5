"""Cloud Storage fixtures: one real gcp-storage-emulator per session (STORAGE_EMULATOR_HOST set
for the real google-cloud-storage client), a client, and a fresh bucket per test.

Use from a test module: ``from tests.gcs_fixtures import gcs_emulator, gcs_client, gcs_bucket``."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from dagrelay.local import gcs, processes

PROJECT = "dagrelay-test"


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The storage emulator for the session; yields its URL (http://127.0.0.1:PORT)."""
    with storage_emulator(tmp_path_factory.mktemp("gcs") / "data") as url:
        yield url


@contextmanager
def storage_emulator(data_dir: Path) -> Iterator[str]:
    """A storage emulator keeping ``gs://b/o`` at ``data_dir/b/o``, with STORAGE_EMULATOR_HOST
    pointing at it meanwhile."""
    port = processes.free_port()
    proc = gcs.start_storage_emulator(port, data_dir)
    url = f"http://127.0.0.1:{port}"
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = url
    try:
        yield url
    finally:
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous
        proc.stop()


@pytest.fixture(scope="session")
def gcs_client(gcs_emulator: str) -> Any:
    return gcs.storage_client(PROJECT)


@pytest.fixture
def gcs_bucket(gcs_client: Any) -> str:
    """A new, empty bucket for this test."""
    name = f"inbox-{uuid.uuid4().hex[:12]}"
    gcs.create_buckets(gcs_client, [name])
    return name
