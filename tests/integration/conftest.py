"""The integration tier's fixtures: PostgreSQL databases (tests/db_fixtures.py), the Pub/Sub
emulator, the local BigQuery and GCS, the ingestion harness, the release wheel and sdist built
once per run (tests/dist_cache.py); and ``socket_origins`` (tests/socket_origins.py), which
names the test that opened a socket found unclosed. Imported here, not in the root conftest, so
the unit tier loads none of them."""

from __future__ import annotations

from tests.bq_fixtures import bq_client, bq_dataset, local_bigquery
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
from tests.dist_cache import shared_dist
from tests.gcs_fixtures import gcs_bucket, gcs_client, gcs_emulator
from tests.integration.ingest_harness import ingest_harness
from tests.pubsub_fixtures import pubsub_emulator
from tests.socket_origins import socket_origins

__all__ = [
    "bq_client",
    "bq_dataset",
    "db",
    "db_url",
    "empty_db_url",
    "engine",
    "fresh_db_url",
    "gcs_bucket",
    "gcs_client",
    "gcs_emulator",
    "ingest_harness",
    "insert_pipeline",
    "local_bigquery",
    "publisher",
    "pubsub_emulator",
    "shared_dist",
    "socket_origins",
    "template_db",
    "worker_db",
]
