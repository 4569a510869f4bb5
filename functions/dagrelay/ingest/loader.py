"""Loading a staged Parquet file into BigQuery, behind a narrow interface (tests use a fake).

The load job id is deterministic per file (``job_id``): a resumed ingestion that reaches the load
again finds the first job instead of appending the rows a second time."""

from __future__ import annotations

import importlib
from typing import Any, Protocol

from google.api_core.exceptions import Conflict

from dagrelay.ingest.sources import Column


class Loader(Protocol):
    def load(self, *, uri: str, table: str, columns: tuple[Column, ...], job_id: str) -> int:
        """Append the Parquet file at ``uri`` (gs://...) to ``table`` (dataset.table) with the
        declared schema; the number of rows loaded. Idempotent per ``job_id``."""
        ...


class BigQueryLoader:
    """load_table_from_uri with an explicit schema (never autodetected), WRITE_APPEND."""

    def __init__(self, client: Any, timeout_s: float = 480.0) -> None:
        self.client = client  # google.cloud.bigquery.Client
        self.timeout_s = timeout_s

    def load(self, *, uri: str, table: str, columns: tuple[Column, ...], job_id: str) -> int:
        from google.cloud import bigquery  # noqa: PLC0415 - only the real loader needs it

        from dagrelay.ingest.parquet import BIGQUERY_TYPES  # noqa: PLC0415 - nor pyarrow

        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            schema=[
                bigquery.SchemaField(
                    c.name, BIGQUERY_TYPES[c.type], mode="REQUIRED" if c.required else "NULLABLE"
                )
                for c in columns
            ],
            write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
            create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
        )
        destination = f"{self.client.project}.{table}"
        try:
            job = self.client.load_table_from_uri(
                uri, destination, job_id=job_id, job_config=config
            )
        except Conflict:
            job = self.client.get_job(job_id)  # a resumed ingestion: the first job's result
        job.result(timeout=self.timeout_s)
        return int(job.output_rows or 0)


def default_loader() -> Loader:
    """The BigQuery loader on the process's shared client
    (``dagrelay.handlers.bigquery.client``)."""
    bq = importlib.import_module("dagrelay.handlers.bigquery.client")
    factory = getattr(bq, "client", None) or bq.get_client
    return BigQueryLoader(factory())
