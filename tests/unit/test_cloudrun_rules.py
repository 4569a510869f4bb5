"""The pure parts of ``cloudrun.job``: where an execution stands, the RunJob request, params."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from google.cloud import run_v2
from pydantic import ValidationError

from dagrelay.handlers.cloudrun import (
    CloudRunJobParams,
    Outcome,
    job_name,
    outcome,
    past_deadline,
    run_request,
)

State = run_v2.Condition.State
Reason = run_v2.Condition.ExecutionReason
DONE = datetime(2026, 1, 1, tzinfo=UTC)


def execution(
    state: int | None = None,
    reason: int = Reason.EXECUTION_REASON_UNDEFINED,
    *,
    done: bool = True,
    message: str = "",
    **counts: int,
) -> run_v2.Execution:
    conditions = []
    if state is not None:
        conditions.append(
            run_v2.Condition(
                type_="Completed", state=state, execution_reason=reason, message=message
            )
        )
    return run_v2.Execution(
        name="e",
        task_count=counts.pop("tasks", 1),
        conditions=conditions,
        completion_time=DONE if done else None,
        **counts,
    )


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param(execution(done=False), Outcome("running"), id="no condition yet"),
        pytest.param(
            execution(State.CONDITION_PENDING, done=False, running_count=1),
            Outcome("running"),
            id="pending",
        ),
        pytest.param(
            execution(State.CONDITION_SUCCEEDED, succeeded_count=1),
            Outcome("succeeded"),
            id="succeeded",
        ),
        pytest.param(
            execution(
                State.CONDITION_FAILED, Reason.NON_ZERO_EXIT_CODE, message="exit 3", failed_count=1
            ),
            Outcome("failed", "exit 3 (1 of 1 tasks failed)"),
            id="failed with a message",
        ),
        pytest.param(
            execution(State.CONDITION_SUCCEEDED, succeeded_count=1, failed_count=1, tasks=2),
            Outcome("failed", "1 of 2 tasks failed"),
            id="one task of two failed",
        ),
        pytest.param(
            execution(State.CONDITION_FAILED, Reason.CANCELLED, cancelled_count=1),
            Outcome("cancelled", "the execution was cancelled"),
            id="cancelled",
        ),
        pytest.param(
            execution(State.CONDITION_FAILED, done=False, failed_count=1),
            Outcome("failed", "1 of 1 tasks failed"),
            id="failed before completion_time is set",
        ),
    ],
)
def test_outcome(given: run_v2.Execution, expected: Outcome) -> None:
    assert outcome(given) == expected


def test_run_request_carries_the_overrides() -> None:
    params = CloudRunJobParams(job="etl", args=["--month", "2024-03"], env={"A": "1"})
    request = run_request("projects/p/locations/r/jobs/etl", params, 900, {"B": "2"})

    (override,) = request.overrides.container_overrides
    assert request.name == "projects/p/locations/r/jobs/etl"
    assert list(override.args) == ["--month", "2024-03"]
    assert not override.clear_args
    assert {e.name: e.value for e in override.env} == {"A": "1", "B": "2"}
    assert request.overrides.timeout == timedelta(seconds=900)


def test_args_unset_keep_the_jobs_own_and_empty_args_clear_them() -> None:
    kept = run_request("n", CloudRunJobParams(job="etl"), 60, {})
    cleared = run_request("n", CloudRunJobParams(job="etl", args=[]), 60, {})
    assert list(kept.overrides.container_overrides[0].args) == []
    assert not kept.overrides.container_overrides[0].clear_args
    assert cleared.overrides.container_overrides[0].clear_args


def test_job_name_defaults_to_the_deployments_project_and_region() -> None:
    assert job_name(CloudRunJobParams(job="etl"), "p", "r") == "projects/p/locations/r/jobs/etl"
    named = CloudRunJobParams(job="etl", project="q", region="s")
    assert job_name(named, "p", "r") == "projects/q/locations/s/jobs/etl"


@pytest.mark.parametrize(
    "params",
    [{}, {"job": "Bad_Name"}, {"job": "etl", "timeout_s": 0}, {"job": "etl", "image": "x"}],
)
def test_bad_params_are_refused(params: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CloudRunJobParams.model_validate(params)


def test_past_deadline() -> None:
    job = {"deadline": DONE.isoformat()}
    assert not past_deadline(job, DONE - timedelta(seconds=1))
    assert past_deadline(job, DONE)
