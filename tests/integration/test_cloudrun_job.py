"""``cloudrun.job`` against the local Cloud Run (dagrelay/local/cloudrun.py, its executions real
subprocesses), through the real ``google-cloud-run`` client and the engine: start, poll,
success, failure, timeout, cancel."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from dagrelay.config import get_settings
from dagrelay.engine.core import Engine as DagEngine
from dagrelay.engine.core import RunOutcome
from dagrelay.handlers import cloudrun
from dagrelay.local.cloudrun import Execution, JobSpec, LocalCloudRun, serve
from dagrelay.messages import CancelBatch, PollTask, RunTask, StartBatch
from tests.integration.helpers import batch_status, set_task_columns, statuses

pytestmark = pytest.mark.integration

InsertPipeline = Callable[..., dict[str, int]]
PY = sys.executable
JOBS = {
    "hello": JobSpec(
        [PY, "-c", "import os, sys; print('hello', sys.argv[1:], os.environ['GREETING'])"],
        args=["from-the-job"],
        env={"GREETING": "job"},
    ),
    # Runs until the file named by its first arg exists (the test decides when it ends).
    "wait-file": JobSpec(
        [PY, "-c", "import os, sys, time\nwhile not os.path.exists(sys.argv[1]): time.sleep(0.02)"]
    ),
    "fail": JobSpec([PY, "-c", "import sys; print('bad input'); sys.exit(3)"]),
    "sleep": JobSpec([PY, "-c", "import time; time.sleep(120)"]),
}


@pytest.fixture
def local_run(tmp_path: Path) -> Iterator[LocalCloudRun]:
    service = LocalCloudRun(JOBS, tmp_path / "logs")
    server = serve(service)
    previous = os.environ.get("DAGRELAY_CLOUD_RUN_ENDPOINT")
    os.environ["DAGRELAY_CLOUD_RUN_ENDPOINT"] = f"http://127.0.0.1:{server.server_address[1]}"
    get_settings.cache_clear()
    cloudrun.clients.cache_clear()
    yield service
    server.shutdown()
    server.server_close()
    service.stop_all()
    cloudrun.close_clients()
    if previous is None:
        os.environ.pop("DAGRELAY_CLOUD_RUN_ENDPOINT", None)
    else:
        os.environ["DAGRELAY_CLOUD_RUN_ENDPOINT"] = previous
    get_settings.cache_clear()


def started(
    engine: DagEngine, insert_pipeline: InsertPipeline, db: Engine, params: dict[str, Any]
) -> str:
    """Pipeline p: run (cloudrun.job) -> after; batch b1 started and run's attempt deferred.
    Returns the execution's name."""
    insert_pipeline(
        "p",
        {"after": ["run"]},
        handlers={"run": "cloudrun.job"},
        params={"run": json.dumps(params)},
    )
    set_task_columns(db, max_retries=0)
    engine.start_batch(StartBatch("p", "b1"))
    assert engine.run_task(RunTask("b1", "run", pipeline="p")) == RunOutcome.DEFERRED
    return str(task_row(db)["job"]["execution"])


def task_row(db: Engine) -> Any:
    with db.connect() as conn:
        return (
            conn.execute(
                text(
                    "SELECT status::text AS status, job, output, error FROM task_log "
                    "JOIN tasks USING (task_id) WHERE name = 'run'"
                )
            )
            .mappings()
            .one()
        )


def wait_for(condition: Callable[[], bool], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def ended(service: LocalCloudRun, name: str) -> Callable[[], bool]:
    return lambda: service.get(name).state != "RUNNING"


POLL = PollTask("b1", "run", attempt=1, pipeline="p")


def test_a_job_runs_with_its_overrides_and_its_logs_land_in_the_output(
    engine: DagEngine, db: Engine, insert_pipeline: InsertPipeline, local_run: LocalCloudRun
) -> None:
    params = {"job": "hello", "args": ["batch={batch_id}"], "env": {"GREETING": "hi"}}
    name = started(engine, insert_pipeline, db, params)
    assert name.startswith("projects/dagrelay-local/locations/europe-west1/jobs/hello/")
    wait_for(ended(local_run, name))

    assert engine.poll_task(POLL) == RunOutcome.SUCCESS
    output = task_row(db)["output"]
    execution = local_run.get(name)
    assert output["execution"] == name
    assert output["exit_codes"] == [0]
    assert output["log_uri"] == execution.log_path.resolve().as_uri()
    assert execution.log_path.read_text() == "hello ['batch=b1'] hi\n"
    assert statuses(db, "b1") == {"run": "SUCCESS", "after": "NEW"}


def test_the_attempt_waits_while_the_execution_runs(
    engine: DagEngine,
    db: Engine,
    insert_pipeline: InsertPipeline,
    local_run: LocalCloudRun,
    tmp_path: Path,
) -> None:
    flag = tmp_path / "done"
    name = started(engine, insert_pipeline, db, {"job": "wait-file", "args": [str(flag)]})

    assert engine.poll_task(POLL) == RunOutcome.DEFERRED  # running: polled again later
    assert local_run.get(name).state == "RUNNING"
    assert task_row(db)["status"] == "PROCESSING"
    flag.touch()
    wait_for(ended(local_run, name))
    assert engine.poll_task(POLL) == RunOutcome.SUCCESS


def test_a_failed_execution_fails_the_attempt_with_its_reason(
    engine: DagEngine, db: Engine, insert_pipeline: InsertPipeline, local_run: LocalCloudRun
) -> None:
    name = started(engine, insert_pipeline, db, {"job": "fail"})
    wait_for(ended(local_run, name))

    assert engine.poll_task(POLL) == RunOutcome.ERROR  # max_retries 0
    error = task_row(db)["error"]
    assert "exit code 3" in error
    assert "exit codes [3]" in error
    assert local_run.get(name).log_path.resolve().as_uri() in error


def test_the_timeout_ends_the_attempt_and_stops_the_execution(
    engine: DagEngine, db: Engine, insert_pipeline: InsertPipeline, local_run: LocalCloudRun
) -> None:
    name = started(engine, insert_pipeline, db, {"job": "sleep", "timeout_s": 1})
    execution: Execution = local_run.get(name)

    wait_for(lambda: engine.poll_task(POLL) != RunOutcome.DEFERRED)
    assert task_row(db)["status"] == "ERROR"
    assert "timed out" in task_row(db)["error"]
    assert execution.state in {"FAILED", "CANCELLED"}
    assert execution.process.poll() is not None  # the subprocess is gone


def test_a_cancel_stops_the_execution_and_the_batch_ends_cancelled(
    engine: DagEngine, db: Engine, insert_pipeline: InsertPipeline, local_run: LocalCloudRun
) -> None:
    name = started(engine, insert_pipeline, db, {"job": "sleep"})
    execution = local_run.get(name)

    engine.cancel_batch(CancelBatch("p", "b1"))

    assert execution.state == "CANCELLED"
    assert execution.process.poll() is not None
    assert statuses(db, "b1") == {"run": "CANCELLED", "after": "CANCELLED"}
    assert batch_status(db, "p", "b1") == "CANCELLED"
    assert engine.poll_task(POLL) == RunOutcome.IGNORED  # the held poll finds nothing to do


def test_an_unknown_job_fails_at_once(
    engine: DagEngine, db: Engine, insert_pipeline: InsertPipeline, local_run: LocalCloudRun
) -> None:
    insert_pipeline("p", {"run": []}, handlers={"run": "cloudrun.job"})
    with db.begin() as conn:
        conn.execute(text("""UPDATE tasks SET params = '{"job": "nope"}', max_retries = 3"""))
    engine.start_batch(StartBatch("p", "b1"))

    assert engine.run_task(RunTask("b1", "run", pipeline="p")) == RunOutcome.ERROR
    assert "jobs/nope' was not found" in task_row(db)["error"]
