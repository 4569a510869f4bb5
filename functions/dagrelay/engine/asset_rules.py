"""The pure rules of asset schedules (ARCHITECTURE.md, "Assets"): which batches a schedule's
pending events start, their batch ids, params and start_batch messages.

A schedule waits for a set of assets. Its pending events (not yet consumed by it) are grouped by
partition (an event without one is in the group ``None``); a group in which every asset has an
event starts one batch, which consumes every event of the group — each is recorded as the
batch's trigger, and its params carry them (``asset_events``, and ``asset_partition`` for a
partitioned group, so the batch's own assets inherit the partition). Groups are taken in the
order of their first event. The batch id comes from the schedule's template: ``{n}`` is the
schedule's run number, ``{partition}`` the group's partition.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dagrelay import messages
from dagrelay.names import is_batch_id
from dagrelay.states import Action

PLACEHOLDERS = ("n", "partition")
DEFAULT_TEMPLATE = "assets-{n}"  # the column default (migration 0019)
MAX_ASSET = 1024


class AssetError(ValueError):
    """A template or a name that cannot work, or a batch id a group cannot have."""


@dataclass(frozen=True)
class Event:
    event_id: int
    asset: str
    pipeline: str  # the producing pipeline, batch and task
    batch_id: str
    task: str
    partition: str | None = None

    def param(self) -> dict[str, Any]:
        return {
            "asset": self.asset,
            "pipeline": self.pipeline,
            "batch_id": self.batch_id,
            "task": self.task,
            "event_id": self.event_id,
        }


@dataclass(frozen=True)
class Waiting:
    """An asset schedule as the rule reads it."""

    pipeline: str
    assets: tuple[str, ...]
    template: str = DEFAULT_TEMPLATE
    runs: int = 0  # asset-triggered batches started so far


@dataclass(frozen=True)
class Firing:
    """One batch to start: its run number, id, message and the events it consumes."""

    run: int
    batch_id: str
    partition: str | None
    events: tuple[Event, ...]
    message: Mapping[str, Any]


def name_problem(asset: str) -> str | None:
    """Why ``asset`` cannot be an asset's name (None: it can)."""
    if not asset or asset.strip() != asset:
        return f"asset {asset!r}: a name is not empty and has no surrounding spaces"
    if len(asset) > MAX_ASSET:
        return f"asset {asset[:40]!r}...: at most {MAX_ASSET} characters"
    return None


def check_template(template: str) -> None:
    """A template uses only ``{n}`` and ``{partition}`` (no format spec) and at least one of
    them, so that two batches of a schedule can have different ids."""
    try:
        parsed = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(template)]
    except ValueError as exc:
        raise AssetError(f"batch_id_template {template!r}: {exc}") from None
    fields = [
        f if not (spec or conv) else f"{f}:{spec}" for f, spec, conv in parsed if f is not None
    ]
    unknown = sorted({f for f in fields if f not in PLACEHOLDERS})
    if unknown:
        allowed = ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
        raise AssetError(f"batch_id_template {template!r}: {unknown[0]!r} is not one of {allowed}")
    if not fields:
        raise AssetError(f"batch_id_template {template!r}: use {{n}} or {{partition}}")


def render(template: str, run: int, partition: str | None) -> str:
    """The batch id of run ``run`` for ``partition``; AssetError when it is not a valid one."""
    if "{partition}" in template and partition is None:
        raise AssetError(
            f"batch_id_template {template!r} needs a partition and the events have none"
        )
    batch_id = template.replace("{n}", str(run)).replace("{partition}", partition or "")
    if not is_batch_id(batch_id):
        raise AssetError(f"batch_id_template {template!r} gives {batch_id!r}: not a batch id")
    return batch_id


def groups(assets: Iterable[str], pending: Sequence[Event]) -> list[tuple[Event, ...]]:
    """The complete groups of ``pending``: per partition, when every asset has an event; in the
    order of their first event."""
    wanted = set(assets)
    by_partition: dict[str | None, list[Event]] = {}
    for event in sorted(pending, key=lambda e: e.event_id):
        if event.asset in wanted:
            by_partition.setdefault(event.partition, []).append(event)
    return [
        tuple(events) for events in by_partition.values() if wanted <= {e.asset for e in events}
    ]


def decide(schedule: Waiting, pending: Sequence[Event]) -> tuple[list[Firing], list[str]]:
    """The batches ``pending`` starts, and the problems of the groups that cannot start one
    (their events stay pending)."""
    firings: list[Firing] = []
    problems: list[str] = []
    run = schedule.runs
    for events in groups(schedule.assets, pending):
        partition = events[0].partition
        try:
            batch_id = render(schedule.template, run + 1, partition)
            message = start_message(schedule, batch_id, partition, events)
        except AssetError as exc:
            problems.append(str(exc))
            continue
        run += 1
        firings.append(Firing(run, batch_id, partition, events, message))
    return firings, problems


def start_message(
    schedule: Waiting, batch_id: str, partition: str | None, events: Sequence[Event]
) -> dict[str, Any]:
    """The start_batch of a group, checked as the router will parse it."""
    params: dict[str, Any] = {"asset_events": [e.param() for e in events]}
    if partition is not None:
        params["asset_partition"] = partition
    message = {
        "action": Action.START_BATCH.value,
        "pipeline": schedule.pipeline,
        "batch_id": batch_id,
        "params": params,
        "triggered_by": f"assets: {', '.join(sorted(set(schedule.assets)))}"[:200],
    }
    if problems := messages.check_outgoing(message):
        raise AssetError(f"the start_batch of {batch_id!r}: {'; '.join(problems)}")
    return message
