"""The demo: files land in the inbox, are ingested, and the example pipeline runs on BigQuery.

1. the local stack (PostgreSQL, Pub/Sub, GCS and BigQuery stand-ins, the router);
2. the pipeline from schema/pipelines/monthly_profit.yaml (shipped as dagrelay/_schema);
3. sales and expenses CSVs for 2024-03 uploaded to gs://<inbox>/inbox/<source>/, each announced
   by the notification GCS would publish;
4. ingestion validates, converts to Parquet, loads to BigQuery and archives them; once both have
   arrived it starts batch 2024-03 of monthly_profit, whose tasks check the data, MERGE the
   month into reports.monthly_profit and check the result;
5. the files, the batch and the profit table are printed; everything started is stopped.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, create_engine, text

from dagrelay.cli.render import batch_table
from dagrelay.config import load_settings
from dagrelay.handlers.bigquery import client as bq
from dagrelay.local import gcs
from dagrelay.local.processes import StackError, wait_for
from dagrelay.local.stack import Stack, StackConfig, StackInfo
from dagrelay.pipelines.apply import apply as apply_pipeline
from dagrelay.pipelines.spec import load_pipeline
from dagrelay.resources import schema_dir
from dagrelay.states import BatchStatus
from dagrelay.store.reads import Batch, read_batches

FILES = {"sales": "sales_2024-03.csv", "expenses": "expenses_2024-03.csv"}
PIPELINE = "monthly_profit"
BATCH_ID = "2024-03"
TIMEOUT_S = 120


def run(console: Console) -> bool:
    started = time.monotonic()
    stack = Stack(StackConfig(functions=("router",)))  # it shows no dashboard
    try:
        with console.status("starting the local stack (PostgreSQL, Pub/Sub, GCS, BigQuery)"):
            info = stack.start()
        console.print(f"stack up in {time.monotonic() - started:.1f}s  (logs: {info.log_dir})")
        db = create_engine(info.database_url)
        try:
            seed(db, info, console)
            drop_files(info, console)
            with console.status(f"ingesting, then waiting for batch {BATCH_ID}"):
                report = wait_for_batch(db, stack)
            console.print(files_table(db, info))
            console.print(batch_table(report))
            profit = profit_rows(info)
            console.print(profit_table(profit))
        finally:
            db.dispose()
    except StackError as exc:
        console.print(f"[red]local stack failed: {exc}")
        return False
    finally:
        stack.stop()
    console.print(
        f"demo finished in {time.monotonic() - started:.1f}s; everything it started is stopped"
    )
    return bool(report["status"] == BatchStatus.SUCCESS and profit)


def seed(db: Engine, info: StackInfo, console: Console) -> None:
    spec = load_pipeline(schema_dir() / "pipelines" / "monthly_profit.yaml")
    names = [task.name for task in spec.tasks]
    with db.begin() as conn:
        # The demo is repeatable: its earlier batches, inbox files and tasks it no longer has
        # (with their history) are forgotten first. It owns its database (DATABASE_URL).
        conn.execute(text("DELETE FROM batches WHERE pipeline = :p"), {"p": PIPELINE})
        conn.execute(text("DELETE FROM file_log WHERE bucket = :b"), {"b": info.inbox_bucket})
        conn.execute(
            text(
                "DELETE FROM task_attempts WHERE task_id IN (SELECT task_id FROM tasks "
                "WHERE pipeline = :p AND NOT name = ANY (CAST(:names AS text[])))"
            ),
            {"p": PIPELINE, "names": names},
        )
        result = apply_pipeline(conn, spec, prune=True)
    console.print(f"pipeline {PIPELINE}: {result}")


def drop_files(info: StackInfo, console: Console) -> None:
    """Upload each file to the inbox and publish the OBJECT_FINALIZE notification GCS would."""
    client = gcs.storage_client(info.project_id)
    bucket = client.bucket(info.inbox_bucket)
    data = schema_dir() / "pipelines" / "data"
    for source, name in FILES.items():
        path = f"inbox/{source}/{name}"
        bucket.blob(path).upload_from_filename(str(data / name), content_type="text/csv")
        gcs.notify(info.inbox_bucket, path, info.project_id, info.events_topic)
        console.print(f"dropped gs://{info.inbox_bucket}/{path} and published its notification")


def wait_for_batch(db: Engine, stack: Stack) -> Batch:
    found: list[Batch] = []

    def finished() -> bool:
        stack.check_alive()
        with db.connect() as conn:
            found[:] = read_batches(conn, BATCH_ID, PIPELINE)
        return bool(found) and found[0]["status"] != BatchStatus.RUNNING

    wait_for(finished, TIMEOUT_S, f"batch {PIPELINE}/{BATCH_ID} to finish", poll_s=0.2)
    return found[0]


def files_table(db: Engine, info: StackInfo) -> Table:
    table = Table(title="ingested files (file_log)", title_justify="left")
    for column in ("object", "source", "status", "rows", "table", "error"):
        table.add_column(column, overflow="fold")
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT name, source, status::text, rows_loaded, target_table, error "
                "FROM file_log WHERE bucket = :b ORDER BY file_id"
            ),
            {"b": info.inbox_bucket},
        ).all()
    for name, source, status, loaded, target, error in rows:
        table.add_row(name, source or "", status, str(loaded or ""), target or "", error or "")
    return table


def profit_rows(info: StackInfo) -> list[dict[str, Any]]:
    settings = load_settings(
        project_id=info.project_id,
        bigquery_project=info.project_id,
        bigquery_endpoint=info.bigquery_endpoint,
    )
    with contextlib.closing(bq.make_client(settings)) as client:
        result = client.query("SELECT * FROM reports.monthly_profit ORDER BY month").result()
        return [dict(row.items()) for row in result]


def profit_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="reports.monthly_profit (BigQuery)", title_justify="left")
    for column in ("month", "sales", "expenses", "profit"):
        table.add_column(column, justify="left" if column == "month" else "right")
    for row in rows:
        table.add_row(
            str(row["month"]),
            f"{row['sales']:.2f}",
            f"{row['expenses']:.2f}",
            f"{row['profit']:.2f}",
        )
    return table
