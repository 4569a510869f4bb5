"""Loading a staged Parquet file into BigQuery, behind a narrow interface (tests use a fake):
submit a load job under a given id, and read it back by id. Nothing here waits for a job: the
``ingest.load`` task defers and its poll reads the job (dagrelay.ingest.handlers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from dagrelay.ingest.sources import Column


@dataclass(frozen=True)
class LoadJob:
    job_id: str
    done: bool
    rows: int = 0
    error: str | None = None  # a DONE job that failed (it loaded nothing)
    retryable: bool = True  # whether another job may get past ``error``


class Loader(Protocol):
    def submit(self, *, job_id: str, uri: str, table: str, columns: tuple[Column, ...]) -> None:
        """Start a job appending the Parquet file at ``uri`` to ``table`` (dataset.table) with
        the declared schema. Submitting an id that exists already starts nothing."""
        ...

    def job(self, job_id: str) -> LoadJob | None:
        """The job's state, or None when no job has that id."""
        ...


class BigQueryLoader:
    """load_table_from_uri with an explicit schema (never autodetected), WRITE_APPEND, on the
    process's shared client; every API call bounded (dagrelay.handlers.bigquery.client)."""

    def __init__(self, client: Any | None = None) -> None:
        self._client = client

    @property
    def client(self) -> Any:
        from dagrelay.handlers.bigquery import client as bq  # noqa: PLC0415 - a heavy import

        return self._client or bq.client()

    def submit(self, *, job_id: str, uri: str, table: str, columns: tuple[Column, ...]) -> None:
        from google.cloud import bigquery  # noqa: PLC0415

        from dagrelay.handlers.bigquery import client as bq  # noqa: PLC0415
        from dagrelay.ingest.parquet import BIGQUERY_TYPES  # noqa: PLC0415 - pyarrow

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
        client = self.client
        bq.submit_once(
            client,
            job_id,
            client.location,
            lambda: client.load_table_from_uri(
                uri,
                f"{client.project}.{table}",
                job_id=job_id,
                location=client.location,
                job_config=config,
                retry=bq.api_retry(),
                timeout=bq.REQUEST_TIMEOUT_S,
            ),
        )

    def job(self, job_id: str) -> LoadJob | None:
        from dagrelay.handlers.bigquery import client as bq  # noqa: PLC0415

        found = bq.find_job(self.client, job_id, self.client.location)
        if found is None:
            return None
        if found.state != "DONE":
            return LoadJob(job_id, done=False)
        error = found.error_result
        if error:
            reason = str(error.get("reason", "unknown"))
            return LoadJob(
                job_id,
                done=True,
                error=f"BigQuery job {job_id} failed ({reason}): {error.get('message', '')}",
                retryable=reason not in bq.NON_RETRYABLE_REASONS,
            )
        return LoadJob(job_id, done=True, rows=int(getattr(found, "output_rows", 0) or 0))
