"""The demo: the example pipeline ``monthly_profit`` end to end on the local stack.

Seeds the pipeline from schema/pipelines/monthly_profit.yaml, triggers batch 2024-03 by
publishing a start_batch message to the emulator, waits for the batch to end, prints its tasks.
"""

from __future__ import annotations

import json
import time
from typing import Any

from google.cloud import pubsub_v1
from rich.console import Console
from sqlalchemy import Engine, create_engine, text

from dagrelay import pipelines
from dagrelay.cli import batch_table
from dagrelay.status import batch_report
from local_emulator.processes import ROOT, StackError, wait_for
from local_emulator.stack import Stack, StackConfig, StackInfo

PIPELINE_FILE = ROOT / "schema" / "pipelines" / "monthly_profit.yaml"
PIPELINE = "monthly_profit"
BATCH_ID = "2024-03"
TIMEOUT_S = 120


def run(console: Console) -> bool:
    started = time.monotonic()
    stack = Stack(StackConfig())
    try:
        with console.status("starting the local stack (PostgreSQL, Pub/Sub emulator, router)"):
            info = stack.start()
        console.print(f"stack up in {time.monotonic() - started:.1f}s  (logs: {info.log_dir})")
        db = create_engine(info.database_url)
        try:
            seed(db, console)
            message_id = trigger(info)
            console.print(f"published start_batch {PIPELINE}/{BATCH_ID} (message {message_id})")
            with console.status(f"waiting for batch {BATCH_ID}"):
                report = wait_for_batch(db, stack)
        finally:
            db.dispose()
    except StackError as exc:
        console.print(f"[red]local stack failed: {exc}")
        return False
    finally:
        stack.stop()
    render(console, report)
    console.print(
        f"demo finished in {time.monotonic() - started:.1f}s; everything it started is stopped"
    )
    return bool(report["status"] == "SUCCESS")


def seed(db: Engine, console: Console) -> None:
    spec = pipelines.load_pipeline(PIPELINE_FILE)
    with db.begin() as conn:
        result = pipelines.apply(conn, spec)
        # The demo is repeatable: the previous run of its batch is removed first.
        removed = conn.execute(
            text("DELETE FROM batches WHERE pipeline = :p AND batch_id = :b"),
            {"p": PIPELINE, "b": BATCH_ID},
        ).rowcount
    console.print(
        f"pipeline {PIPELINE}: {result}" + (" (previous demo batch removed)" if removed else "")
    )


def trigger(info: StackInfo) -> str:
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(info.project_id, info.events_topic)
    message = {
        "action": "start_batch",
        "pipeline": PIPELINE,
        "batch_id": BATCH_ID,
        "params": {"month": BATCH_ID},
        "triggered_by": "local_emulator demo",
    }
    future = publisher.publish(topic, json.dumps(message).encode(), action="start_batch")
    return str(future.result(timeout=30))


def wait_for_batch(db: Engine, stack: Stack) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def finished() -> bool:
        stack.check_alive()
        with db.connect() as conn:
            report = batch_report(conn, BATCH_ID, PIPELINE)
        found[:] = report
        return bool(report) and report[0]["status"] != "RUNNING"

    wait_for(finished, TIMEOUT_S, f"batch {BATCH_ID} to finish", poll_s=0.1)
    return found[0]


def render(console: Console, report: dict[str, Any]) -> None:
    console.print(batch_table(report))
