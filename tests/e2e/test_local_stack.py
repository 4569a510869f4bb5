"""End to end: a message published to the emulator is pushed to the router under
functions-framework, which runs the batch against PostgreSQL, chaining through Pub/Sub."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, text

from dagrelay.local.processes import wait_for
from dagrelay.pipelines.apply import apply as apply_pipeline
from dagrelay.pipelines.spec import load_pipeline
from tests.dbtools import create_database, drop_database
from tests.e2e.sql_pipelines import insert_with_sql
from tests.paths import ROOT

pytestmark = pytest.mark.e2e

Publish = Callable[..., str]
WaitBatch = Callable[..., dict[str, Any]]


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {t["task"]: t["status"] for t in report["tasks"]}


def test_example_pipeline_runs_through_pubsub(
    stack_db: Engine, publish: Publish, wait_batch: WaitBatch
) -> None:
    spec = load_pipeline(ROOT / "tests" / "fixtures" / "pipelines" / "monthly_profit.yaml")
    with stack_db.begin() as conn:
        apply_pipeline(conn, spec)
    publish({"action": "start_batch", "pipeline": "monthly_profit", "batch_id": "2024-03"})

    report = wait_batch("monthly_profit", "2024-03")

    assert report["status"] == "SUCCESS"
    assert statuses(report) == {
        "load_sales": "SUCCESS",
        "load_expenses": "SUCCESS",
        "calculate_profit": "SUCCESS",
    }
    with stack_db.connect() as conn:
        output = conn.execute(
            text(
                "SELECT tl.output FROM task_log tl JOIN tasks t USING (task_id) "
                "WHERE t.name = 'calculate_profit' AND tl.batch_id = '2024-03'"
            )
        ).scalar_one()
    assert output["profit"] == pytest.approx(420.25)


def test_diamond_inserted_with_raw_sql(
    stack_db: Engine, publish: Publish, wait_batch: WaitBatch
) -> None:
    noop = ("python.noop", "{}")
    insert_with_sql(
        stack_db,
        "e2e_diamond",
        {"dia_a": noop, "dia_b": noop, "dia_c": noop, "dia_d": noop},
        [("dia_a", "dia_b"), ("dia_a", "dia_c"), ("dia_b", "dia_d"), ("dia_c", "dia_d")],
    )
    publish({"action": "start_batch", "pipeline": "e2e_diamond", "batch_id": "b1"})

    report = wait_batch("e2e_diamond", "b1")

    assert report["status"] == "SUCCESS"
    assert statuses(report) == dict.fromkeys(("dia_a", "dia_b", "dia_c", "dia_d"), "SUCCESS")
    assert {t["attempt"] for t in report["tasks"]} == {1}
    started = {t["task"]: t["started_at"] for t in report["tasks"]}
    finished = {t["task"]: t["finished_at"] for t in report["tasks"]}
    assert started["dia_d"] >= max(finished["dia_b"], finished["dia_c"])


def test_failure_marks_descendants_and_fails_the_batch(
    stack_db: Engine, publish: Publish, wait_batch: WaitBatch
) -> None:
    insert_with_sql(
        stack_db,
        "e2e_failing",
        {
            "fail_root": ("python.noop", "{}"),
            "fail_bad": ("python.fail", '{"message": "disk on fire"}'),
            "fail_ok": ("python.noop", "{}"),
            "fail_child": ("python.noop", "{}"),
            "fail_grandchild": ("python.noop", "{}"),
        },
        [
            ("fail_root", "fail_bad"),
            ("fail_root", "fail_ok"),
            ("fail_bad", "fail_child"),
            ("fail_ok", "fail_child"),
            ("fail_child", "fail_grandchild"),
        ],
    )
    publish({"action": "start_batch", "pipeline": "e2e_failing", "batch_id": "b1"})

    report = wait_batch("e2e_failing", "b1")

    assert report["status"] == "FAILED"
    assert statuses(report) == {
        "fail_root": "SUCCESS",
        "fail_bad": "ERROR",
        "fail_ok": "SUCCESS",
        "fail_child": "UPSTREAM_FAILED",
        "fail_grandchild": "UPSTREAM_FAILED",
    }
    by_task = {t["task"]: t for t in report["tasks"]}
    assert "disk on fire" in by_task["fail_bad"]["error"]
    assert by_task["fail_child"]["root_cause_task"] == "fail_bad"
    assert by_task["fail_grandchild"]["root_cause_task"] == "fail_bad"


def test_malformed_message_is_recorded_and_acknowledged(
    stack_db: Engine, publish: Publish, wait_batch: WaitBatch
) -> None:
    message_id = publish(b"{not json", action="start_batch")

    def recorded() -> bool:
        with stack_db.connect() as conn:
            return bool(
                conn.execute(
                    text("SELECT 1 FROM rejected_messages WHERE message_id = :m"),
                    {"m": message_id},
                ).first()
            )

    wait_for(recorded, 30, "the malformed message to be recorded")
    with stack_db.connect() as conn:
        row = conn.execute(
            text("SELECT reason, data FROM rejected_messages WHERE message_id = :m"),
            {"m": message_id},
        ).one()
    assert "not JSON" in row.reason
    assert base64.b64decode(row.data) == b"{not json"
    # The router is still serving: a good batch still runs.
    insert_with_sql(stack_db, "e2e_after_bad", {"after_bad": ("python.noop", "{}")}, [])
    publish({"action": "start_batch", "pipeline": "e2e_after_bad", "batch_id": "b1"})
    assert wait_batch("e2e_after_bad", "b1")["status"] == "SUCCESS"


def test_demo_command_end_to_end(template_db: str, tmp_path: Any) -> None:
    """`python -m local_emulator demo` (what `make demo` runs), on a database of its own."""
    name = f"dagrelay_demo_{os.getpid()}"
    url = create_database(name, template=template_db)
    try:
        # A user's shell: none of this session's emulators or settings, only the database.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("DAGRELAY_") and not k.endswith("_EMULATOR_HOST")
        }
        env["DATABASE_URL"] = url
        result = subprocess.run(
            [sys.executable, "-m", "local_emulator", "demo"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
    finally:
        drop_database(name)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "monthly_profit / 2024-03  SUCCESS" in output
    assert "│ 2024-03 │ 1250.50 │   830.25 │ 420.25 │" in output  # reports.monthly_profit
    (tmp_path / "demo-output.txt").write_text(output)
