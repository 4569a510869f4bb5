"""What every sensor shares: its params (poke interval, timeout, what a timeout does) and the
wait itself — check, then defer with what it waits for, until found or timed out.

The job a sensor defers with (kept in task_log between pokes)::

    {"waiting_for": "gs://bucket/name", "since": "<ISO time>", "deadline": "<ISO time>", ...}

``waiting_for`` and ``since`` are what status pages show; a job with ``waiting_for`` is a pure
wait, ended CANCELLED at once by its batch's cancel (dagrelay.handlers.registry.WAITING_FOR)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dagrelay.errors import NonRetryableError, SkipTask
from dagrelay.handlers.registry import WAITING_FOR, Deferred, HandlerContext

Found = Mapping[str, Any] | None  # what the check found (the task's output), None: not yet
Check = Callable[[], Found]
DAY_S = 86_400.0


class OnTimeout(StrEnum):
    ERROR = "error"  # the task ends ERROR (alerted, its children UPSTREAM_FAILED)
    SKIP = "skip"  # the task ends SKIPPED (its children decided as for a skipped parent)


class SensorParams(BaseModel):
    """The params every sensor takes."""

    model_config = ConfigDict(extra="forbid")

    poke_interval_s: float = Field(60.0, ge=1, le=3600, description="Seconds between checks.")
    timeout_s: float = Field(
        DAY_S,
        gt=0,
        le=30 * DAY_S,
        description="How long to wait, from the first check, before giving up (not the "
        "task's own timeout_s, which bounds one check).",
    )
    on_timeout: OnTimeout = Field(OnTimeout.ERROR, description="error, or skip the task.")


def start(
    ctx: HandlerContext[Any],
    params: SensorParams,
    waiting_for: str,
    check: Check | None,
    extra: Mapping[str, Any] | None = None,
) -> Mapping[str, Any] | Deferred:
    """The first check: the output if ``check`` finds it now, else the wait's first deferral.
    ``check`` None (a signal sensor: the engine looks for it at each poll): poll at once."""
    now = ctx.clock()
    if check is not None and (found := check()) is not None:
        return found
    job = {
        WAITING_FOR: waiting_for,
        "since": now.isoformat(),
        "deadline": (now + timedelta(seconds=params.timeout_s)).isoformat(),
        **(extra or {}),
    }
    return Deferred(job, 0.0 if check is None else _next_poke(params, now, job))


def poke(
    ctx: HandlerContext[Any], params: SensorParams, job: Mapping[str, Any], found: Found
) -> Mapping[str, Any] | Deferred:
    """One poke: the output if found, else ERROR/SKIPPED once the deadline passed (naming what
    was awaited), else defer until the next poke (never past the deadline)."""
    if found is not None:
        return found
    now = ctx.clock()
    if now >= datetime.fromisoformat(str(job["deadline"])):
        reason = (
            f"timed out after {params.timeout_s:g} s waiting for {job[WAITING_FOR]} "
            f"(since {job['since']})"
        )
        if params.on_timeout == OnTimeout.SKIP:
            raise SkipTask(reason)
        raise NonRetryableError(reason)
    return Deferred(job, _next_poke(params, now, job))


def _next_poke(params: SensorParams, now: datetime, job: Mapping[str, Any]) -> float:
    left = (datetime.fromisoformat(str(job["deadline"])) - now).total_seconds()
    return max(0.0, min(params.poke_interval_s, left))
