"""The local Cloud Run jobs: the part of the Cloud Run Admin API v2 (REST) that ``cloudrun.job``
uses — RunJob, GetExecution, CancelExecution, ListTasks — on 127.0.0.1, running each execution
as a subprocess with Cloud Run's lifecycle: running, then succeeded (exit 0), failed (another
exit code, or its timeout passed: killed) or cancelled (killed). The real ``google-cloud-run``
client reaches it through ``cloud_run_endpoint`` (REST transport, no credentials).

A job is defined locally by its command (what the image would run): ``{"name": {"command":
[...], "args": [...], "env": {...}}}`` in a JSON file (``--jobs``); RunJob's args replace the
job's args, its env is added, its timeout bounds the execution. Any project and region resolve
to the same job by name. Output goes to one log file per execution, its ``logUri``
(``file://``). Run it with ``python -m dagrelay.local.cloudrun --port P --jobs FILE --logs DIR``
(the stack does), or in a thread with ``serve`` (tests).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from dagrelay.local import processes
from dagrelay.local.processes import ManagedProcess, StackError

_NAME = r"projects/[^/]+/locations/[^/]+/jobs/[^/:]+"
RUN = re.compile(rf"^/v2/({_NAME}):run$")
GET = re.compile(rf"^/v2/({_NAME}/executions/[^/:]+)$")
CANCEL = re.compile(rf"^/v2/({_NAME}/executions/[^/:]+):cancel$")
TASKS = re.compile(rf"^/v2/({_NAME}/executions/[^/:]+)/tasks$")
EXECUTION_TYPE = "type.googleapis.com/google.cloud.run.v2.Execution"
ENDPOINT_ENV = "DAGRELAY_CLOUD_RUN_ENDPOINT"  # the setting cloud_run_endpoint


class ApiError(Exception):
    def __init__(self, code: int, status: str, message: str) -> None:
        super().__init__(message)
        self.code, self.status, self.message = code, status, message


@dataclass(frozen=True)
class JobSpec:
    command: list[str]
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Execution:
    name: str
    job: str
    process: subprocess.Popen[bytes]
    log_path: Path
    timeout_s: float
    created: datetime
    completed: datetime | None = None
    state: str = "RUNNING"  # RUNNING, SUCCEEDED, FAILED, CANCELLED
    exit_code: int | None = None
    message: str = ""


def _now() -> datetime:
    return datetime.now(UTC)


def _stamp(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


class LocalCloudRun:
    """Executions of the locally defined jobs, one subprocess each."""

    def __init__(self, jobs: Mapping[str, JobSpec], logs: Path) -> None:
        self.jobs = dict(jobs)
        self.logs = logs
        self.executions: dict[str, Execution] = {}
        self.lock = threading.Lock()

    def run(self, job: str, body: Mapping[str, Any]) -> Execution:
        spec = self.jobs.get(job.rsplit("/", 1)[1])
        if spec is None:
            raise ApiError(404, "NOT_FOUND", f"Resource '{job}' was not found")
        overrides = body.get("overrides") or {}
        container = (overrides.get("containerOverrides") or [{}])[0]
        args = container.get("args") or ([] if container.get("clearArgs") else spec.args)
        env = {**spec.env, **{e["name"]: e.get("value", "") for e in container.get("env") or []}}
        timeout_s = float(str(overrides.get("timeout") or "600s").rstrip("s"))
        execution_id = f"{job.rsplit('/', 1)[1]}-{uuid.uuid4().hex[:5]}"
        name = f"{job}/executions/{execution_id}"
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{execution_id}.log"
        env |= {"CLOUD_RUN_JOB": spec_name(job), "CLOUD_RUN_EXECUTION": execution_id}
        env |= {"CLOUD_RUN_TASK_INDEX": "0", "CLOUD_RUN_TASK_COUNT": "1"}
        with log_path.open("wb") as log:
            process = subprocess.Popen(  # the locally defined job's own command
                [*spec.command, *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={"PATH": os.environ.get("PATH", ""), **env},
                start_new_session=True,  # a cancel kills the whole group
            )
        execution = Execution(name, job, process, log_path, timeout_s, _now())
        with self.lock:
            self.executions[name] = execution
        return execution

    def get(self, name: str) -> Execution:
        with self.lock:
            execution = self.executions.get(name)
        if execution is None:
            raise ApiError(404, "NOT_FOUND", f"Resource '{name}' was not found")
        self._refresh(execution)
        return execution

    def cancel(self, name: str) -> Execution:
        execution = self.get(name)
        if execution.state != "RUNNING":
            raise ApiError(400, "FAILED_PRECONDITION", f"Execution {name} has already completed")
        self._end(execution, "CANCELLED", "The execution was cancelled.")
        return execution

    def stop_all(self) -> None:
        with self.lock:
            running = [e for e in self.executions.values() if e.state == "RUNNING"]
        for execution in running:
            self._end(execution, "CANCELLED", "The local Cloud Run stopped.")

    def _refresh(self, execution: Execution) -> None:
        if execution.state != "RUNNING":
            return
        code = execution.process.poll()
        if code is None:
            if (_now() - execution.created).total_seconds() > execution.timeout_s:
                self._end(
                    execution,
                    "FAILED",
                    f"Task {execution.name}-task0 timed out after {execution.timeout_s:g}s.",
                )
            return
        with self.lock:
            execution.exit_code = code
            execution.completed = _now()
            execution.state = "SUCCEEDED" if code == 0 else "FAILED"
            if code:
                execution.message = f"Task {execution.name}-task0 failed: exit code {code}."

    def _end(self, execution: Execution, state: str, message: str) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(execution.process.pid, signal.SIGKILL)
        code = execution.process.wait()
        with self.lock:
            if execution.state == "RUNNING":
                execution.state, execution.message = state, message
                execution.exit_code, execution.completed = code, _now()


def spec_name(job: str) -> str:
    return job.rsplit("/", 1)[1]


def execution_json(e: Execution) -> dict[str, Any]:
    """The Execution resource as Cloud Run's REST API spells it."""
    running = e.state == "RUNNING"
    condition: dict[str, Any] = {"type": "Completed"}
    if running:
        condition["state"] = "CONDITION_PENDING"
    else:
        condition["state"] = "CONDITION_SUCCEEDED" if e.state == "SUCCEEDED" else "CONDITION_FAILED"
        condition["message"] = e.message
        if e.state == "CANCELLED":
            condition["executionReason"] = "CANCELLED"
        elif e.state == "FAILED":
            condition["executionReason"] = "NON_ZERO_EXIT_CODE"
    return {
        "name": e.name,
        "uid": e.name.rsplit("/", 1)[1],
        "job": spec_name(e.job),
        "createTime": _stamp(e.created),
        "startTime": _stamp(e.created),
        "completionTime": _stamp(e.completed),
        "taskCount": 1,
        "parallelism": 1,
        "runningCount": int(running),
        "succeededCount": int(e.state == "SUCCEEDED"),
        "failedCount": int(e.state == "FAILED"),
        "cancelledCount": int(e.state == "CANCELLED"),
        "conditions": [condition],
        "logUri": e.log_path.resolve().as_uri(),
        "reconciling": running,
    }


def task_json(e: Execution) -> dict[str, Any]:
    task: dict[str, Any] = {"name": f"{e.name}/tasks/{spec_name(e.name)}-task0", "index": 0}
    if e.exit_code is not None and e.state != "RUNNING":
        task["lastAttemptResult"] = {"exitCode": e.exit_code}
    return task


def operation_json(e: Execution) -> dict[str, Any]:
    return {
        "name": f"{e.job.split('/jobs/')[0]}/operations/{uuid.uuid4()}",
        "metadata": {"@type": EXECUTION_TYPE, **execution_json(e)},
        "done": False,
    }


def make_handler(service: LocalCloudRun) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer(self._get)

        def do_POST(self) -> None:
            self._answer(self._post)

        def _get(self, path: str) -> dict[str, Any]:
            if match := GET.match(path):
                return execution_json(service.get(match[1]))
            if match := TASKS.match(path):
                return {"tasks": [task_json(service.get(match[1]))]}
            raise ApiError(404, "NOT_FOUND", f"no such method: GET {path}")

        def _post(self, path: str) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if match := RUN.match(path):
                return operation_json(service.run(match[1], body))
            if match := CANCEL.match(path):
                return operation_json(service.cancel(match[1]))
            raise ApiError(404, "NOT_FOUND", f"no such method: POST {path}")

        def _answer(self, method: Any) -> None:
            path = self.path.split("?", 1)[0]
            try:
                status, payload = 200, method(path)
            except ApiError as exc:
                status = exc.code
                payload = {
                    "error": {"code": exc.code, "status": exc.status, "message": exc.message}
                }
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


def read_jobs(path: Path) -> dict[str, JobSpec]:
    raw = json.loads(path.read_text(encoding="utf-8"))
    return {
        name: JobSpec(list(j["command"]), list(j.get("args", [])), dict(j.get("env", {})))
        for name, j in raw.items()
    }


def serve(service: LocalCloudRun, port: int = 0) -> ThreadingHTTPServer:
    """The API on 127.0.0.1:``port`` (0: a free one), served from a daemon thread; stop it with
    ``shutdown()`` and ``service.stop_all()``."""
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(service))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def start(port: int, jobs_file: Path, workdir: Path) -> ManagedProcess:
    """The local Cloud Run as a process of the stack (stopped by PID: SIGTERM cancels its
    running executions)."""
    argv = [sys.executable, "-m", "dagrelay.local.cloudrun", "--port", str(port)]
    argv += ["--jobs", str(jobs_file), "--logs", str(workdir / f"run-executions-{port}")]
    proc = processes.spawn("cloud-run", argv, workdir / f"cloud-run-{port}.log", os.environ)
    try:
        processes.wait_for(
            lambda: processes.port_open(port) or not proc.alive(), 30, "the local Cloud Run"
        )
    except StackError:
        proc.stop()
        raise
    if not proc.alive():
        raise StackError(f"the local Cloud Run exited:\n{proc.log_tail()}")
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(prog="dagrelay.local.cloudrun")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--jobs", type=Path, required=True)
    parser.add_argument("--logs", type=Path, required=True)
    options = parser.parse_args()
    service = LocalCloudRun(read_jobs(options.jobs), options.logs)
    server = ThreadingHTTPServer(("127.0.0.1", options.port), make_handler(service))
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever()
    finally:
        service.stop_all()


if __name__ == "__main__":
    main()
