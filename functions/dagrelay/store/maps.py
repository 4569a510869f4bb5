"""The store side of mapped tasks (schema/sql/map.sql): groups, their instances and counters.
Decisions (how many items, which outcome) are the engine's (``dagrelay.engine.maps``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from dagrelay.bounds import stored_error_or_none
from dagrelay.states import TaskStatus
from dagrelay.store.outbox import OutgoingMessage
from dagrelay.store.queries import query
from dagrelay.store.transitions import AttemptRef, Created, CreatedTask, _created


@dataclass(frozen=True)
class MapSource:
    """An open group and what it maps over, described: ``kind`` is the JSON type of the value
    at ``map.over`` (None: the parent has no such output), ``length`` a list's length and
    ``ref`` a string's text (a ``gs://`` reference)."""

    log_id: int
    pipeline: str
    batch_id: str
    task_id: int
    task: str
    map: Mapping[str, Any]
    kind: str | None
    length: int | None
    ref: str | None


@dataclass(frozen=True)
class Counters:
    total: int
    tolerated: int
    succeeded: int
    failed: int
    alerts: list[OutgoingMessage] = field(default_factory=list)  # the one exceeding failure's


@dataclass(frozen=True)
class GroupCount:
    task: str
    total: int
    succeeded: int
    failed: int
    running: int


def map_sources(conn: Connection, log_ids: Sequence[int]) -> list[MapSource]:
    rows = conn.execute(query("map_sources"), {"log_ids": list(log_ids)}).all()
    return [
        MapSource(
            r.log_id, r.pipeline, r.batch_id, r.task_id, r.name, r.map, r.kind, r.length, r.ref
        )
        for r in rows
    ]


def expand(
    conn: Connection,
    *,
    groups: Mapping[int, int],
    resolved: Mapping[int, list[Any]],
    topic: str,
    now: datetime,
) -> Created:
    """One NEW instance per item for every group (log_id -> tolerated failures), with its
    run_task message; ``resolved`` holds the items read from a reference, by group log_id."""
    row = conn.execute(
        query("expand_map"),
        {
            "log_ids": list(groups),
            "tolerated": list(groups.values()),
            "resolved": json.dumps({str(k): v for k, v in resolved.items()}),
            "topic": topic,
            "now": now,
        },
    ).one()
    return _created(row)


def close_groups(
    conn: Connection,
    *,
    closed: Sequence[tuple[int, str, str | None]],
    alerts_topic: str,
    now: datetime,
) -> Created:
    """(log_id, SKIPPED|ERROR, reason) for groups decided without instances."""
    row = conn.execute(
        query("close_groups"),
        {
            "log_ids": [c[0] for c in closed],
            "statuses": [c[1] for c in closed],
            "errors": [stored_error_or_none(c[2]) for c in closed],
            "alerts_topic": alerts_topic,
            "now": now,
        },
    ).one()
    return _created(row)


def count_item(
    conn: Connection,
    *,
    ref: AttemptRef,
    status: str,
    error: str | None,
    alerts_topic: str,
    now: datetime,
) -> Counters | None:
    """Count an instance that ended in its group's counters; the failure (ERROR) that makes
    the failed items exceed the tolerated ones writes the group's one alert."""
    row = conn.execute(
        query("count_map_item"),
        {
            "batch_id": ref.batch_id,
            "task_id": ref.task_id,
            "status": status,
            "log_id": ref.log_id,
            "attempt": ref.attempt,
            "task": ref.task,
            "map_index": ref.map_index,
            "error": error,
            "alerts_topic": alerts_topic,
            "now": now,
        },
    ).one_or_none()
    if row is None:
        return None
    alerts = [OutgoingMessage.from_json(m) for m in row.messages]
    return Counters(row.total, row.tolerated, row.succeeded, row.failed, alerts)


def cancelled_group_done(conn: Connection, *, batch_id: str, task_id: int) -> bool:
    """Whether the group the cancel closed has no instance running any more."""
    params = {"batch_id": batch_id, "task_id": task_id}
    return conn.execute(query("cancelled_group_done"), params).first() is not None


def decide_group(
    conn: Connection, *, batch_id: str, task_id: int, status: str, error: str | None, now: datetime
) -> Created:
    rows = conn.execute(
        query("decide_group"),
        {
            "batch_id": batch_id,
            "task_id": task_id,
            "status": status,
            "error": stored_error_or_none(error),
            "now": now,
        },
    ).all()
    return Created(
        [CreatedTask(r.log_id, r.task_id, TaskStatus(r.status), r.root_cause_log_id) for r in rows],
        [],
    )


def reset_failed_items(
    conn: Connection, *, batch_id: str, task_id: int, task: str, topic: str, now: datetime
) -> tuple[bool, Created]:
    """(whether the decided group was reopened, its failed instances created again)."""
    row = conn.execute(
        query("reset_failed_items"),
        {"batch_id": batch_id, "task_id": task_id, "task": task, "topic": topic, "now": now},
    ).one()
    return bool(row.reopened), _created(row)


def recount_children(conn: Connection, *, pipeline: str, batch_id: str, task_id: int) -> None:
    """The fan-in counters of the children of a group that opened again, recounted."""
    params = {"pipeline": pipeline, "batch_id": batch_id, "task_ids": [task_id]}
    conn.execute(query("rerun_recount_fanin"), params)


def is_mapped(conn: Connection, *, version_id: int, task: str) -> bool:
    params = {"version_id": version_id, "task": task}
    return bool(conn.execute(query("version_task_mapped"), params).scalar_one_or_none())


def resume_batch(conn: Connection, *, pipeline: str, batch_id: str) -> bool:
    """The batch RUNNING again after a rerun of failed items; False if its status forbids it
    (CANCELLING: the rerun would undo the cancel)."""
    params = {"pipeline": pipeline, "batch_id": batch_id}
    return conn.execute(query("resume_batch"), params).first() is not None


@dataclass(frozen=True)
class Reopened:
    """What resume did to the groups a cancel closed: their counters after the recount (by
    task_id) and the instances created again with their messages."""

    counters: dict[int, Counters]
    created: Created


def resume_groups(
    conn: Connection, *, pipeline: str, batch_id: str, topic: str, now: datetime
) -> Reopened:
    """The cancelled groups of a batch being resumed open again with their cancelled items."""
    params = {"pipeline": pipeline, "batch_id": batch_id, "topic": topic, "now": now}
    row = conn.execute(query("resume_groups"), params).one()
    counters = {
        g["task_id"]: Counters(g["total"], g["tolerated"], g["succeeded"], g["failed"])
        for g in row.groups
    }
    return Reopened(counters, _created(row))


def instances(
    conn: Connection, *, pipeline: str, batch_id: str, task: str, limit: int
) -> list[dict[str, Any]]:
    params = {"pipeline": pipeline, "batch_id": batch_id, "task": task, "limit": limit}
    return [dict(r) for r in conn.execute(query("map_instances"), params).mappings()]


def group_counts(conn: Connection, *, pipeline: str, batch_id: str) -> list[GroupCount]:
    rows = conn.execute(query("map_group_counts"), {"pipeline": pipeline, "batch_id": batch_id})
    return [GroupCount(r.task, r.total, r.succeeded, r.failed, r.running) for r in rows]
