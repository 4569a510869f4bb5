"""Fixtures for the local BigQuery (bqemulator, the ``local`` extra): one emulator per session.

``local_bigquery`` starts it with a ``gcs_root`` directory for ``gs://`` URIs and points
dagrelay's settings at it (``DAGRELAY_BIGQUERY_ENDPOINT`` / ``_PROJECT``, a short retry
deadline), so ``dagrelay.handlers.bigquery.client.client()`` talks to it;
everything is restored afterwards.
``bq_dataset`` is a fresh dataset per test.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

import pytest
from google.cloud import bigquery

from dagrelay.config import get_settings
from dagrelay.handlers.bigquery import client as bq
from dagrelay.local import bigquery as local_bq

PROJECT = "dagrelay-test"


@pytest.fixture(scope="session")
def local_bigquery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local_bq.LocalBigQuery]:
    if importlib.util.find_spec("bqemulator") is None:
        pytest.fail("the local BigQuery needs the 'local' extra: pip install -e '.[local]'")
    emulator = local_bq.start(
        PROJECT, tmp_path_factory.mktemp("gcs"), tmp_path_factory.mktemp("bqemulator")
    )
    env = {**emulator.env(), "DAGRELAY_BIGQUERY_RETRY_DEADLINE_S": "5"}
    previous = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    _forget_clients()
    yield emulator
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _forget_clients()
    emulator.stop()


def _forget_clients() -> None:
    get_settings.cache_clear()
    bq.client.cache_clear()


@pytest.fixture
def bq_client(local_bigquery: local_bq.LocalBigQuery) -> bigquery.Client:
    """dagrelay's own client (the one the handlers use), pointed at the emulator."""
    return bq.client()


@pytest.fixture
def bq_dataset(bq_client: bigquery.Client, unique: str) -> Iterator[str]:
    """A dataset of this test's own; dropped with its tables afterwards."""
    name = f"t_{unique}"
    bq_client.create_dataset(name, retry=bq.api_retry())
    yield name
    bq_client.delete_dataset(name, delete_contents=True, retry=bq.api_retry())
