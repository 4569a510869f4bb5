"""Work longer than a function may run (issue 22): on the local stack, whose router answers
every request within 2 s (functions-framework's request timeout), a ``cloudrun.job`` task whose
job runs 8 s ends SUCCESS — the execution is polled, no request waits for it."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import datetime

import pytest
from sqlalchemy import text

from tests.e2e import test_faults
from tests.e2e.test_faults import FaultStack

pytestmark = [pytest.mark.e2e, pytest.mark.long_pole(30)]

fault_stack = test_faults.fault_stack  # the fixture: a stack of this test's own
REQUEST_TIMEOUT_S, JOB_S = 2, 8
# functions-framework's gunicorn: one thread per worker, and a worker silent for 2 s (a request
# held that long) is killed, as a function instance is at its timeout. The router's imports are
# done before it serves (the local stack's router is dagrelay/local/warm_router.py): a cold start
# under load may take longer than 2 s.
ROUTER_TIMEOUT = {"CLOUD_RUN_TIMEOUT_SECONDS": str(REQUEST_TIMEOUT_S), "THREADS": "1"}
JOBS = {
    "long": {"command": [sys.executable, "-c", f"import time; time.sleep({JOB_S}); print('done')"]}
}


def test_a_job_four_times_longer_than_the_request_timeout_ends_success(
    fault_stack: Callable[..., FaultStack],
) -> None:
    fs = fault_stack(
        data_services=False, run_jobs=JOBS, router_env=ROUTER_TIMEOUT, sweep_older_than_s=1
    )
    with fs.db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tasks (name, pipeline, handler, params, timeout_s) VALUES "
                "('long', 'jobs', 'cloudrun.job', CAST(:params AS jsonb), 60)"
            ),
            {"params": json.dumps({"job": "long", "poll_after_s": 1})},
        )
    began = time.monotonic()
    fs.start_batch("jobs", "b1")
    status = fs.wait_batch("jobs", "b1", timeout_s=60)
    wall_s = time.monotonic() - began
    with fs.db.connect() as conn:
        output, attempts = conn.execute(
            text("SELECT output, attempt FROM task_log WHERE batch_id = 'b1'")
        ).one()
    print(f"e2e cloudrun.job: {JOB_S} s job, {REQUEST_TIMEOUT_S} s request timeout, "
          f"batch wall time {wall_s:.1f} s")  # fmt: skip
    assert status == "SUCCESS"
    assert attempts == 1  # no attempt was lost to a request timeout
    assert output["exit_codes"] == [0]
    log_uri = output["log_uri"]
    assert log_uri.startswith("file://")
    with open(log_uri.removeprefix("file://"), encoding="utf-8") as log:
        assert log.read() == "done\n"
    ran = datetime.fromisoformat(output["completed_at"]) - datetime.fromisoformat(
        output["started_at"]
    )
    assert ran.total_seconds() >= JOB_S >= 4 * REQUEST_TIMEOUT_S
