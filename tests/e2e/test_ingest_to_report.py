"""From a file drop to the report: CSVs uploaded to the inbox (GCS stand-in) and announced by
the notification GCS would publish are ingested into BigQuery (bqemulator), which starts the
monthly_profit batch; its query writes reports.monthly_profit. Also: a bad file is rejected
with its reason and kept, and a repeated notification loads nothing twice."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from dagrelay.config import load_settings
from dagrelay.handlers.bigquery import client as bq
from dagrelay.local import gcs
from dagrelay.local.processes import wait_for
from dagrelay.local.stack import Stack, StackConfig, StackInfo
from dagrelay.pipelines.apply import apply as apply_pipeline
from dagrelay.pipelines.spec import load_pipeline
from dagrelay.store.reads import batch_report
from tests.dbtools import create_database, drop_database
from tests.paths import ROOT

pytestmark = pytest.mark.e2e

DATA = ROOT / "schema" / "pipelines" / "data"


@pytest.fixture(scope="module")
def data_stack(
    template_db: str, pubsub_emulator: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[StackInfo, Engine]]:
    name = f"dagrelay_ingest_{uuid.uuid4().hex[:8]}"
    url = create_database(name, template=template_db)
    unique = uuid.uuid4().hex[:6]
    stack = Stack(
        StackConfig(
            database_url=url,
            project_id="dagrelay-test",
            events_topic=f"events-ingest-{unique}",
            subscription=f"events-ingest-{unique}-router",
            alerts_topic=f"alerts-ingest-{unique}",
            dead_letter_topic=f"dead-ingest-{unique}",
            emulator_host=pubsub_emulator,
            sweep_interval_s=1.0,
            sweep_older_than_s=5,
            functions=("router",),  # the files' outcome is read from the database
            workdir=tmp_path_factory.mktemp("ingest-stack"),
        )
    )
    info = stack.start()
    db = create_engine(url)
    try:
        with db.begin() as conn:
            spec = load_pipeline(ROOT / "schema" / "pipelines" / "monthly_profit.yaml")
            apply_pipeline(conn, spec)
        yield info, db
    finally:
        db.dispose()
        stack.stop()
        drop_database(name)


def drop(info: StackInfo, source: str, name: str, content: bytes) -> str:
    path = f"inbox/{source}/{name}"
    bucket = gcs.storage_client(info.project_id).bucket(info.inbox_bucket)
    bucket.blob(path).upload_from_string(content, content_type="text/csv")
    gcs.notify(info.inbox_bucket, path, info.project_id, info.events_topic)
    return path


def file_rows(db: Engine) -> dict[str, tuple[Any, ...]]:
    with db.connect() as conn:
        rows = conn.execute(
            text("SELECT name, status::text, rows_loaded, error FROM file_log ORDER BY file_id")
        ).all()
    return {r[0]: tuple(r[1:]) for r in rows}


def query(info: StackInfo, sql: str) -> list[dict[str, Any]]:
    settings = load_settings(
        project_id=info.project_id,
        bigquery_project=info.project_id,
        bigquery_endpoint=info.bigquery_endpoint,
    )
    with contextlib.closing(bq.make_client(settings)) as client:
        return [dict(row.items()) for row in client.query(sql).result()]


def test_files_to_the_profit_report(data_stack: tuple[StackInfo, Engine]) -> None:
    info, db = data_stack
    sales = drop(info, "sales", "sales_2024-03.csv", (DATA / "sales_2024-03.csv").read_bytes())
    expenses_bytes = (DATA / "expenses_2024-03.csv").read_bytes()
    expenses = drop(info, "expenses", "expenses_2024-03.csv", expenses_bytes)
    gcs.notify(info.inbox_bucket, expenses, info.project_id, info.events_topic)  # GCS repeats

    found: list[dict[str, Any]] = []

    def finished() -> bool:
        with db.connect() as conn:
            found[:] = batch_report(conn, "2024-03", "monthly_profit")
        return bool(found) and found[0]["status"] != "RUNNING"

    wait_for(finished, 90, "the monthly_profit batch the files start")

    assert found[0]["status"] == "SUCCESS", found[0]["tasks"]
    assert file_rows(db) == {sales: ("ARCHIVED", 4, None), expenses: ("ARCHIVED", 3, None)}
    assert query(info, "SELECT * FROM reports.monthly_profit") == [
        {"month": "2024-03", "sales": 1250.5, "expenses": 830.25, "profit": 420.25}
    ]
    loaded = query(info, "SELECT COUNT(*) AS n FROM finance.expenses")
    assert loaded == [{"n": 3}]  # notified twice, loaded once
    archived = (
        gcs.storage_client(info.project_id)
        .bucket(info.inbox_bucket)
        .list_blobs(prefix="archive/expenses/")
    )
    assert [Path(b.name).name for b in archived] == ["expenses_2024-03.csv"]


def test_a_bad_file_is_rejected_with_its_reason_and_kept(
    data_stack: tuple[StackInfo, Engine],
) -> None:
    info, db = data_stack
    content = b"expense_date,category,amount,approved\n2024-04-01,rent,not-a-number,true\n"
    path = drop(info, "expenses", "expenses_2024-04.csv", content)

    wait_for(
        lambda: file_rows(db).get(path, ("",))[0] == "REJECTED", 60, "the bad file's rejection"
    )

    _status, _rows, error = file_rows(db)[path]
    assert "amount" in error
    assert "line 2" in error
    bucket = gcs.storage_client(info.project_id).bucket(info.inbox_bucket)
    kept = [b for b in bucket.list_blobs(prefix="rejected/expenses/") if b.name.endswith(".csv")]
    assert [b.download_as_bytes() for b in kept] == [content]
