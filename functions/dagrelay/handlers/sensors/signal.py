"""``sensor.signal``: waits for a ``signal`` message with its ``key`` (published by another
system, or ``dagrelay signal KEY``). The engine looks for the signal at each poll and wakes the
waiting sensors when one arrives, so the sensor ends within one message's delivery, not at its
next poke. Which signal counts (ARCHITECTURE.md, "Sensors"): the first with the key received at
or after the batch started (``since: batch``, the default: a signal sent while the upstream
tasks still ran counts), or after the sensor's task became due in this run (``since: task``: a
rerun waits for a new one). Its output is the signal::

    - name: wait_for_crm
      handler: sensor.signal
      params: {key: "crm.export.{batch_id}", timeout_s: 43200, on_timeout: skip}
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pydantic import Field

from dagrelay.handlers.registry import HandlerContext, handler
from dagrelay.handlers.sensors import wait

KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:/@=+-]{0,199}$"  # as in the signal message's schema


class Since(StrEnum):
    BATCH = "batch"
    TASK = "task"


class SignalParams(wait.SensorParams):
    key: str = Field(pattern=KEY_PATTERN, description="The signal's key.")
    since: Since = Field(Since.BATCH, description="batch: signals since the batch started.")
    poke_interval_s: float = Field(
        300.0, ge=1, le=3600, description="Seconds between checks (a signal wakes it anyway)."
    )


def found(job: Mapping[str, Any]) -> wait.Found:
    """The output, when the engine found the signal (``job["arrived"]``)."""
    arrived = job.get("arrived")
    if not isinstance(arrived, Mapping):
        return None
    return {
        "key": arrived.get("key"),
        "payload": arrived.get("payload", {}),
        "received_at": arrived.get("received_at"),
        "signal_id": arrived.get("signal_id"),
    }


def _poll(ctx: HandlerContext[SignalParams], job: Mapping[str, Any]) -> Any:
    waiting = {k: v for k, v in job.items() if k != "arrived"}
    return wait.poke(ctx, ctx.params, waiting, found(job))


@handler("sensor.signal", params=SignalParams, poll=_poll)
def signal_sensor(ctx: HandlerContext[SignalParams]) -> Any:
    """Wait for a signal message with a key."""
    key = ctx.params.key
    extra = {"signal_key": key, "since_rule": ctx.params.since.value}
    return wait.start(ctx, ctx.params, f"signal {key}", None, extra)
