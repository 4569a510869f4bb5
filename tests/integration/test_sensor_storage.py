"""The GCS and BigQuery sensors (ARCHITECTURE.md, "Sensors") through the engine, against the
local stand-ins (the storage emulator, bqemulator): found at the first check or at a later poke,
a timeout ERROR or SKIPPED naming what was awaited, a cancel while waiting, a poke delivered
twice."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from google.cloud import bigquery
from sqlalchemy import Engine

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.handlers.bigquery import client as bq
from dagrelay.states import BatchStatus, TaskStatus
from dagrelay.store.outbox import InMemoryPublisher
from tests.conftest import FakeClock
from tests.integration.sensor_harness import Sensors, params

pytestmark = pytest.mark.integration

InsertPipeline = Callable[..., dict[str, int]]


@pytest.fixture
def sensors(
    db: Engine, engine: DagEngine, publisher: InMemoryPublisher, clock: FakeClock
) -> Sensors:
    return Sensors(db, engine, publisher, clock)


def pipeline(insert_pipeline: InsertPipeline, handler: str, **values: Any) -> None:
    """wait (the sensor) -> report (python.noop)."""
    values = {"poke_interval_s": 60, "timeout_s": 180} | values
    insert_pipeline(
        "p", {"report": ["wait"]}, handlers={"wait": handler}, params={"wait": params(**values)}
    )


def upload(gcs_client: Any, bucket: str, name: str) -> Any:
    blob = gcs_client.bucket(bucket).blob(name)
    blob.upload_from_file(io.BytesIO(b"id\n1\n"), content_type="text/csv")
    blob.reload()
    return blob


# -- GCS --------------------------------------------------------------------------------------


def test_gcs_an_object_that_arrives_later_ends_the_wait(
    sensors: Sensors, insert_pipeline: InsertPipeline, gcs_client: Any, gcs_bucket: str
) -> None:
    pipeline(insert_pipeline, "sensor.gcs", bucket=gcs_bucket, object="crm/{batch_id}.csv")
    sensors.start("p", "b1")
    waiting = sensors.row("wait")
    assert waiting["status"] == TaskStatus.PROCESSING
    assert waiting["job"]["waiting_for"] == f"gs://{gcs_bucket}/crm/b1.csv"
    assert sensors.poke(60) == ["deferred"]
    upload(gcs_client, gcs_bucket, "crm/b1.csv")
    assert sensors.poke(60)[0] == "success"
    assert sensors.row("wait")["output"]["object"] == "crm/b1.csv"
    assert sensors.batch("p") == BatchStatus.SUCCESS


def test_gcs_a_prefix_counts_only_objects_newer_than_the_time_given(
    sensors: Sensors, insert_pipeline: InsertPipeline, gcs_client: Any, gcs_bucket: str
) -> None:
    old = upload(gcs_client, gcs_bucket, "crm/old.csv")
    newer_than = old.updated.isoformat()
    pipeline(insert_pipeline, "sensor.gcs", bucket=gcs_bucket, prefix="crm/", newer_than=newer_than)
    sensors.start("p", "b1")
    assert sensors.row("wait")["status"] == TaskStatus.PROCESSING
    upload(gcs_client, gcs_bucket, "crm/new.csv")
    sensors.poke(60)
    assert sensors.row("wait")["output"]["object"] == "crm/new.csv"


def test_gcs_an_object_there_already_needs_no_wait(
    sensors: Sensors, insert_pipeline: InsertPipeline, gcs_client: Any, gcs_bucket: str
) -> None:
    upload(gcs_client, gcs_bucket, "done.flag")
    pipeline(insert_pipeline, "sensor.gcs", bucket=gcs_bucket, object="done.flag")
    sensors.start("p", "b1")
    assert sensors.row("wait")["status"] == TaskStatus.SUCCESS
    assert sensors.held_polls() == 0


@pytest.mark.parametrize(
    ("on_timeout", "status", "batch"),
    [("error", TaskStatus.ERROR, BatchStatus.FAILED), ("skip", TaskStatus.SKIPPED, "SUCCESS")],
)
def test_gcs_timeout(
    sensors: Sensors,
    insert_pipeline: InsertPipeline,
    gcs_bucket: str,
    on_timeout: str,
    status: TaskStatus,
    batch: str,
) -> None:
    pipeline(
        insert_pipeline, "sensor.gcs", bucket=gcs_bucket, object="never", on_timeout=on_timeout
    )
    sensors.start("p", "b1")
    sensors.poke(60)
    sensors.poke(60)
    assert sensors.row("wait")["status"] == TaskStatus.PROCESSING
    sensors.poke(60)
    ended = sensors.row("wait")
    assert ended["status"] == status
    assert f"timed out after 180 s waiting for gs://{gcs_bucket}/never" in ended["error"]
    assert sensors.batch("p") == batch


def test_gcs_cancel_while_waiting_and_a_poke_delivered_twice(
    sensors: Sensors, insert_pipeline: InsertPipeline, gcs_bucket: str
) -> None:
    pipeline(insert_pipeline, "sensor.gcs", bucket=gcs_bucket, prefix="in/")
    sensors.start("p", "b1")
    assert sensors.poke(60, copies=2) == ["deferred", "ignored"]
    assert sensors.held_polls() == 1
    sensors.send({"action": "cancel_batch", "pipeline": "p", "batch_id": "b1"})
    assert sensors.deliver() == ["cancelled"]
    assert sensors.row("wait")["error"] == f"cancelled while waiting for gs://{gcs_bucket}/in/*"
    assert sensors.batch("p") == BatchStatus.CANCELLED
    assert sensors.poke(60) == ["ignored"]
    assert sensors.poke(600) == []


# -- BigQuery ---------------------------------------------------------------------------------

SCHEMA = [bigquery.SchemaField("id", "INT64"), bigquery.SchemaField("day", "DATE")]


def create(client: bigquery.Client, table: str, rows: list[dict[str, Any]]) -> None:
    client.create_table(bigquery.Table(f"{client.project}.{table}", schema=SCHEMA))
    if rows:
        errors = client.insert_rows_json(f"{client.project}.{table}", rows)
        assert errors == []


def test_bigquery_a_table_that_appears_later_ends_the_wait(
    sensors: Sensors,
    insert_pipeline: InsertPipeline,
    bq_client: bigquery.Client,
    bq_dataset: str,
) -> None:
    table = f"{bq_dataset}.sales"
    pipeline(insert_pipeline, "sensor.bigquery", table=table)
    sensors.start("p", "b1")
    assert sensors.row("wait")["job"]["waiting_for"] == f"BigQuery table {table}"
    assert sensors.poke(60, copies=2) == ["deferred", "ignored"]
    create(bq_client, "" + table, [])
    assert sensors.poke(60)[0] == "success"
    assert sensors.row("wait")["output"]["table"] == table


def test_bigquery_a_partition_with_rows_ends_the_wait(
    sensors: Sensors,
    insert_pipeline: InsertPipeline,
    bq_client: bigquery.Client,
    bq_dataset: str,
) -> None:
    table = f"{bq_dataset}.sales"
    create(bq_client, table, [{"id": 1, "day": "2024-03-01"}])
    pipeline(
        insert_pipeline,
        "sensor.bigquery",
        table=table,
        partition_field="day",
        partition="2024-03-02",
    )
    sensors.start("p", "b1")
    assert sensors.row("wait")["status"] == TaskStatus.PROCESSING
    errors = bq_client.insert_rows_json(
        f"{bq_client.project}.{table}", [{"id": 2, "day": "2024-03-02"}], retry=bq.api_retry()
    )
    assert errors == []
    sensors.poke(60)
    assert sensors.row("wait")["output"] == {"table": table, "rows": 1}


@pytest.mark.parametrize(("on_timeout", "status"), [("error", "ERROR"), ("skip", "SKIPPED")])
def test_bigquery_timeout_and_cancel(
    sensors: Sensors,
    insert_pipeline: InsertPipeline,
    bq_dataset: str,
    on_timeout: str,
    status: str,
) -> None:
    table = f"{bq_dataset}.missing"
    pipeline(insert_pipeline, "sensor.bigquery", table=table, min_rows=5, on_timeout=on_timeout)
    sensors.start("p", "b1")
    sensors.poke(120)
    sensors.poke(60)
    ended = sensors.row("wait")
    assert ended["status"] == status
    assert f"waiting for BigQuery table {table} with at least 5 rows" in ended["error"]
    sensors.send({"action": "start_batch", "pipeline": "p", "batch_id": "b2"})
    sensors.deliver()
    sensors.send({"action": "cancel_batch", "pipeline": "p", "batch_id": "b2"})
    assert sensors.deliver() == ["cancelled"]
    assert sensors.batch("p", "b2") == BatchStatus.CANCELLED


def test_the_wait_started_at_the_engine_s_time(
    sensors: Sensors, insert_pipeline: InsertPipeline, gcs_bucket: str
) -> None:
    pipeline(insert_pipeline, "sensor.gcs", bucket=gcs_bucket, object="x")
    sensors.start("p", "b1")
    job = sensors.row("wait")["job"]
    assert datetime.fromisoformat(job["since"]) == datetime(2024, 3, 1, tzinfo=UTC)
    assert datetime.fromisoformat(job["deadline"]) == datetime(2024, 3, 1, 0, 3, tzinfo=UTC)
