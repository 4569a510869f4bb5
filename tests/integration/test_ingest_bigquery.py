"""Ingestion into the local BigQuery (bqemulator), reading the Parquet the storage emulator holds
(both share one data directory): the rows in the table, never doubled — the same content
uploaded twice, a corrected file under a loaded name, a worker killed after submitting its load
job — each with the load deferred and concluded by its poll."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.cloud import bigquery

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.engine.core import RunOutcome
from dagrelay.ingest.loader import BigQueryLoader
from dagrelay.local import bigquery as local_bq
from dagrelay.local import gcs
from dagrelay.local.crashes import CrashInjector, InjectedCrash
from tests.gcs_fixtures import storage_emulator
from tests.integration.ingest_harness import SOURCES, Harness

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[2] / "schema" / "pipelines" / "data"
SALES = "inbox/sales/sales_2024-03.csv"


@pytest.fixture(scope="module")
def gcs_emulator(local_bigquery: local_bq.LocalBigQuery) -> Iterator[str]:
    """A storage emulator keeping its objects where bqemulator reads gs:// URIs."""
    with storage_emulator(local_bigquery.gcs_root) as url:
        yield url


@pytest.fixture(scope="module")
def gcs_client(gcs_emulator: str) -> Any:
    return gcs.storage_client("dagrelay-test")


@pytest.fixture
def h(ingest_harness: Harness, bq_client: bigquery.Client, bq_dataset: str) -> Harness:
    sales = dataclasses.replace(SOURCES["sales"], target_table=f"{bq_dataset}.sales", triggers=())
    return ingest_harness.reconfigured(loader=BigQueryLoader(bq_client), sources={"sales": sales})


def table_rows(h: Harness, bq_client: bigquery.Client) -> list[tuple[Any, ...]]:
    table = h.runtime.sources["sales"].target_table
    sql = f"SELECT region, quantity, amount FROM {table} ORDER BY sale_date"
    return [tuple(r.values()) for r in bq_client.query(sql).result()]


FIRST = [
    ("north", 3, 300.0),
    ("south", 1, 450.5),
    ("north", 2, 200.0),
    ("east", 5, 300.0),
]


def test_the_same_content_twice_is_in_the_table_once(
    h: Harness, bq_client: bigquery.Client
) -> None:
    raw = (DATA / "sales_2024-03.csv").read_bytes()
    outcomes = [h.ingest(h.upload(SALES, raw))]
    outcomes.append(h.ingest(h.upload(SALES, raw)))  # a new generation
    outcomes.append(h.ingest(h.upload("inbox/sales/again_2024-03.csv", raw)))  # another name
    assert outcomes == ["received"] * 3
    assert table_rows(h, bq_client) == FIRST
    assert [s for _, s in h.files()] == ["ARCHIVED", "DUPLICATE", "DUPLICATE"]


def test_a_corrected_file_under_the_same_name_leaves_the_rows_alone(
    h: Harness, bq_client: bigquery.Client
) -> None:
    raw = (DATA / "sales_2024-03.csv").read_bytes()
    h.ingest(h.upload(SALES, raw))
    h.ingest(h.upload(SALES, raw.replace(b"450.50", b"460.50")))
    assert [s for _, s in h.files()] == ["ARCHIVED", "REJECTED"]
    assert table_rows(h, bq_client) == FIRST


def test_a_worker_killed_after_submitting_the_load_does_not_load_twice(
    h: Harness, engine: DagEngine, bq_client: bigquery.Client
) -> None:
    engine.hooks = CrashInjector.parse("after_handler:ingest.sales.load")
    h.ingestor(h.upload(SALES, (DATA / "sales_2024-03.csv").read_bytes()))
    with pytest.raises(InjectedCrash):
        h.drive()
    job = h.file(SALES)["load_job"]
    assert job is not None  # submitted, the deferral never recorded
    outcomes = h.drive()  # the lease expires, the retry finds the job
    assert ("ingest.sales.load", RunOutcome.SUCCESS) in outcomes
    assert (h.file(SALES)["status"], h.file(SALES)["load_job"]) == ("ARCHIVED", job)
    assert table_rows(h, bq_client) == FIRST
