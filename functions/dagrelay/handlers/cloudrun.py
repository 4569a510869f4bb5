"""``cloudrun.job``: run a Cloud Run job as deferred work (ARCHITECTURE.md, "Deferred work").

The attempt starts one execution of a job the team deployed (``RunJob`` with overrides: args,
env, timeout) and defers; the engine polls the execution (no request is held between polls)
until it ends. Success: the output names the execution, its logs (``log_uri``) and its tasks'
exit codes. Failure: the attempt fails with Cloud Run's reason (retried as usual: a new
execution). The execution is cancelled when the batch is cancelled or the attempt's lease
expires (the handler's ``cancel``), and by the poll once its timeout has passed.

The client talks to ``cloud_run_endpoint`` without credentials when it is set (the local
stand-in, ``dagrelay/local/cloudrun.py``), else to Cloud Run with the environment's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, Literal

from google.api_core import exceptions as api
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import run_v2
from pydantic import BaseModel, ConfigDict, Field

from dagrelay.config import get_settings
from dagrelay.errors import DagrelayError, NonRetryableError
from dagrelay.handlers.registry import Deferred, HandlerContext, handler

REQUEST_TIMEOUT_S = 30.0  # one API call
# API errors another attempt cannot fix: a missing job, no permission, a bad override.
_FINAL = (api.NotFound, api.PermissionDenied, api.InvalidArgument, api.Unauthenticated)
_JOB_NAME = r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"


class CloudRunJobParams(BaseModel):
    """The params of ``cloudrun.job``."""

    model_config = ConfigDict(extra="forbid")

    job: str = Field(pattern=_JOB_NAME, description="The Cloud Run job's name (deployed).")
    project: str | None = Field(None, min_length=1, description="Unset: project_id.")
    region: str | None = Field(None, min_length=1, description="Unset: region.")
    args: list[str] | None = Field(
        None, description="Replace the container's args ([]: none); unset: the job's own."
    )
    env: dict[str, str] = Field(default_factory=dict, description="Added to the job's env.")
    timeout_s: int | None = Field(
        None, ge=1, le=7 * 24 * 3600, description="The execution's limit; unset: the task's."
    )
    poll_after_s: float = Field(30.0, ge=1, le=3600, description="Seconds between polls.")


class CloudRunError(DagrelayError):
    """A Cloud Run failure another attempt may get past (an execution failed, a 503)."""


# -- pure decisions ----------------------------------------------------------------------------

State = Literal["running", "succeeded", "failed", "cancelled"]


@dataclass(frozen=True)
class Outcome:
    state: State
    reason: str = ""


def outcome(execution: run_v2.Execution) -> Outcome:
    """Where an execution stands, from its counts and its ``Completed`` condition."""
    completed = next((c for c in execution.conditions if c.type_ == "Completed"), None)
    reason = completed.message if completed is not None else ""
    done = "completion_time" in execution or (
        completed is not None
        and completed.state
        in (run_v2.Condition.State.CONDITION_SUCCEEDED, run_v2.Condition.State.CONDITION_FAILED)
    )
    if not done:
        return Outcome("running")
    cancelled = completed is not None and completed.execution_reason in (
        run_v2.Condition.ExecutionReason.CANCELLED,
        run_v2.Condition.ExecutionReason.CANCELLING,
    )
    if cancelled or execution.cancelled_count > 0:
        return Outcome("cancelled", reason or "the execution was cancelled")
    tasks = max(execution.task_count, 1)
    if execution.succeeded_count >= tasks and (
        completed is None or completed.state == run_v2.Condition.State.CONDITION_SUCCEEDED
    ):
        return Outcome("succeeded")
    counts = f"{execution.failed_count} of {tasks} tasks failed"
    return Outcome("failed", f"{reason} ({counts})" if reason else counts)


def run_request(
    name: str, params: CloudRunJobParams, timeout_s: int, env: Mapping[str, str]
) -> run_v2.RunJobRequest:
    """RunJob with the task's overrides: args (replacing the job's), env, timeout."""
    override = run_v2.RunJobRequest.Overrides.ContainerOverride(
        env=[run_v2.EnvVar(name=k, value=v) for k, v in {**params.env, **env}.items()]
    )
    if params.args is not None:
        override.args = list(params.args)
        override.clear_args = not params.args
    overrides = run_v2.RunJobRequest.Overrides(
        container_overrides=[override], timeout=timedelta(seconds=timeout_s)
    )
    return run_v2.RunJobRequest(name=name, overrides=overrides)


def job_name(params: CloudRunJobParams, project: str, region: str) -> str:
    where = f"projects/{params.project or project}/locations/{params.region or region}"
    return f"{where}/jobs/{params.job}"


def past_deadline(job: Mapping[str, Any], now: datetime) -> bool:
    return now >= datetime.fromisoformat(str(job["deadline"]))


# -- the client --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clients:
    jobs: run_v2.JobsClient
    executions: run_v2.ExecutionsClient
    tasks: run_v2.TasksClient


@cache
def clients() -> Clients:
    """The process-wide clients: the configured endpoint (REST, no credentials) when one is
    set, else Cloud Run with the environment's credentials."""
    endpoint = get_settings().cloud_run_endpoint
    options: dict[str, Any] = {}
    if endpoint:
        options = {
            "transport": "rest",
            "credentials": AnonymousCredentials(),  # type: ignore[no-untyped-call]
            "client_options": ClientOptions(api_endpoint=endpoint),
        }
    return Clients(
        run_v2.JobsClient(**options),
        run_v2.ExecutionsClient(**options),
        run_v2.TasksClient(**options),
    )


def close_clients() -> None:
    """Close the process-wide clients (if made) and forget them: the next use makes new ones,
    reading the settings again."""
    if clients.cache_info().currsize:
        made = clients()
        for client in (made.jobs, made.executions, made.tasks):
            client.transport.close()  # type: ignore[no-untyped-call]
    clients.cache_clear()


def _translated(exc: api.GoogleAPICallError, what: str) -> DagrelayError:
    if isinstance(exc, _FINAL):
        return NonRetryableError(f"{what}: {exc.message or exc}")
    return CloudRunError(f"{what}: {exc.message or exc}")


# -- the handler, its poll and its cancel -----------------------------------------------------


def poll(
    ctx: HandlerContext[CloudRunJobParams], job: Mapping[str, Any]
) -> Mapping[str, Any] | Deferred:
    name = str(job["execution"])
    try:
        execution = clients().executions.get_execution(name=name, timeout=REQUEST_TIMEOUT_S)
    except api.GoogleAPICallError as exc:
        raise _translated(exc, f"Cloud Run execution {name}") from exc
    result = outcome(execution)
    logs = execution.log_uri or job.get("log_uri")
    if result.state == "running":
        if past_deadline(job, datetime.now(UTC)):
            cancel(ctx, job)
            raise CloudRunError(
                f"Cloud Run execution {name} timed out after {job['timeout_s']} s and was "
                f"cancelled; logs: {logs}"
            )
        return Deferred(job, ctx.params.poll_after_s)
    codes = _exit_codes(name)
    if result.state != "succeeded":
        raise CloudRunError(
            f"Cloud Run execution {name} {result.state}: {result.reason}; "
            f"exit codes {codes}; logs: {logs}"
        )
    return {
        "execution": name,
        "log_uri": logs,
        "exit_codes": codes,
        "tasks": max(execution.task_count, 1),
        "succeeded": execution.succeeded_count,
        "started_at": _iso(execution.start_time),
        "completed_at": _iso(execution.completion_time),
    }


def cancel(ctx: HandlerContext[CloudRunJobParams], job: Mapping[str, Any]) -> None:
    """Cancel the execution; one that has ended or is gone is stopped already."""
    name = str(job["execution"])
    try:
        clients().executions.cancel_execution(name=name, timeout=REQUEST_TIMEOUT_S)
    except (api.NotFound, api.FailedPrecondition):
        return
    except api.BadRequest as exc:
        # Over REST a FAILED_PRECONDITION ("has already completed": it ended between the read
        # and the cancel) arrives as a plain 400: stopped already if it no longer runs.
        if not _still_running(name):
            return
        raise _translated(exc, f"cancelling Cloud Run execution {name}") from exc
    except api.GoogleAPICallError as exc:
        raise _translated(exc, f"cancelling Cloud Run execution {name}") from exc


def _still_running(name: str) -> bool:
    try:
        execution = clients().executions.get_execution(name=name, timeout=REQUEST_TIMEOUT_S)
    except api.NotFound:
        return False
    except api.GoogleAPICallError:
        return True  # unknown: the cancel's own error stands
    return outcome(execution).state == "running"


@handler("cloudrun.job", params=CloudRunJobParams, poll=poll, cancel=cancel)
def run_job(ctx: HandlerContext[CloudRunJobParams]) -> Deferred:
    """Start one execution of the job and defer; the poll finishes the attempt."""
    p = ctx.params
    settings = get_settings()
    name = job_name(p, settings.project_id, settings.region)
    timeout_s = p.timeout_s or ctx.timeout_s or 600
    env = {
        "DAGRELAY_IDEMPOTENCY_KEY": ctx.idempotency_key,  # one per task run: dedupe effects
        "DAGRELAY_BATCH_ID": ctx.batch_id,
        "DAGRELAY_ATTEMPT": str(ctx.attempt),
    }
    try:
        operation = clients().jobs.run_job(
            request=run_request(name, p, timeout_s, env), timeout=REQUEST_TIMEOUT_S
        )
    except api.GoogleAPICallError as exc:
        raise _translated(exc, f"running Cloud Run job {name}") from exc
    execution: run_v2.Execution = operation.metadata
    deadline = datetime.now(UTC) + timedelta(seconds=timeout_s)
    job = {
        "execution": execution.name,
        "log_uri": execution.log_uri,
        "timeout_s": timeout_s,
        "deadline": deadline.isoformat(),
    }
    return Deferred(job, p.poll_after_s)


def _exit_codes(execution: str) -> list[int | None]:
    """Each task's last exit code, in task order (None: it never ran to an exit)."""
    try:
        tasks: Sequence[run_v2.Task] = list(
            clients().tasks.list_tasks(parent=execution, timeout=REQUEST_TIMEOUT_S)
        )
    except api.GoogleAPICallError as exc:
        raise _translated(exc, f"the tasks of Cloud Run execution {execution}") from exc
    ordered = sorted(tasks, key=lambda t: t.index)
    return [
        t.last_attempt_result.exit_code if "last_attempt_result" in t else None for t in ordered
    ]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
