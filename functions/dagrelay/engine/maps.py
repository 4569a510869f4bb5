"""Mapped tasks: a task with ``map: {over: <parent>.<output key>}`` runs once per item.

When the fan-in decides such a task, its group row (map_index -1) opens (PROCESSING, never
claimed) and, in the same transaction, ``open_groups`` creates one instance per item (one
statement whatever the number of items) or closes the group at once: SKIPPED for an empty list,
ERROR for a value that is not a list, a list longer than ``max_items`` or an unreadable
reference. A value that is a ``gs://`` string names a JSON-lines object (one item per line):
the engine reads it here, once, streamed and bounded (it stops at ``max_items`` + 1 items or
``MAX_LIST_BYTES``, whichever comes first, so a huge object costs a chunk of memory, not its
size), and the instances carry their items like any other.

Each instance ends through the normal attempt path; its terminal write counts it in the group's
counters (``count_instance``) and the last one decides the group once: SUCCESS when at most
``tolerated_failures`` items failed (a count, or "P%" of the items, rounded down), else ERROR.
The group's outcome is the one parent transition its children's fan-in sees; its output is its
items' outputs in index order.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from dagrelay.errors import NonRetryableError
from dagrelay.messages import escaped, unstorable_json
from dagrelay.states import TaskStatus
from dagrelay.store import maps as store_maps
from dagrelay.store import transitions as store
from dagrelay.store.db import refused_value
from dagrelay.store.outbox import OutgoingMessage

MAX_ITEMS = 1024
MAX_LIST_BYTES = 16 * 1024 * 1024  # of a gs:// list of items: read no further
READ_CHUNK_BYTES = 1024 * 1024
# Reads a gs:// list: (reference, max_items) -> at most max_items items, or ListTooLarge.
ItemReader = Callable[[str, int], list[Any]]


class ListTooLarge(ValueError):
    """A referenced list over a limit (``max_items`` or ``MAX_LIST_BYTES``), found while reading
    it: the message names the limit and the size."""


@dataclass(frozen=True)
class Plan:
    """What to do with one open group: expand it (``tolerated`` failures allowed) or close it
    with ``status`` and ``reason``."""

    status: TaskStatus | None = None
    reason: str | None = None
    tolerated: int = 0
    items: list[Any] | None = None  # read from a reference


def tolerated(spec: int | str | None, total: int) -> int:
    """How many failed items a group of ``total`` tolerates: a count, or "P%" rounded down."""
    if spec is None:
        return 0
    if isinstance(spec, str):
        return math.floor(total * float(spec.rstrip("%")) / 100)
    return spec


def plan(source: store_maps.MapSource, read: ItemReader) -> Plan:
    """Pure apart from reading a reference: the plan for one open group."""
    over = source.map["over"]
    limit = int(source.map.get("max_items", MAX_ITEMS))
    where = f"map.over {over!r}"
    items: list[Any] | None = None
    if source.kind == "array":
        count = source.length or 0
    elif source.kind == "string" and (source.ref or "").startswith("gs://"):
        items, refused = _read_reference(source.ref or "", read, limit, where)
        if refused is not None:
            return refused
        count = len(items)
    elif source.kind is None:
        return Plan(TaskStatus.ERROR, f"{where}: the parent's output has no such key")
    else:
        return Plan(
            TaskStatus.ERROR, f"{where} is a {source.kind}, not a list or a gs:// reference"
        )
    if problem := _refused_items(count, limit, items):
        return Plan(TaskStatus.ERROR, f"{where}{problem}")
    if count == 0:
        return Plan(TaskStatus.SKIPPED, f"{where} is an empty list")
    return Plan(tolerated=tolerated(source.map.get("tolerated_failures"), count), items=items)


def _read_reference(
    ref: str, read: ItemReader, limit: int, where: str
) -> tuple[list[Any], Plan | None]:
    """The items of a gs:// reference, or the plan that closes the group with the reason."""
    try:
        return read(ref, limit), None
    except ListTooLarge as exc:
        return [], Plan(TaskStatus.ERROR, f"{where}: {ref} {exc}")
    except Exception as exc:  # noqa: BLE001 - an unreadable reference is the task's error
        return [], Plan(TaskStatus.ERROR, f"{where}: cannot read {ref}: {exc}")


def _refused_items(count: int, limit: int, items: list[Any] | None) -> str | None:
    """Why the items cannot become instances: more than ``max_items``, or an item read from a
    reference that PostgreSQL cannot hold (a NUL character, NaN), named by its index (a list
    from the parent's output is JSONB already)."""
    if count > limit:
        return f" has {count} items, more than max_items ({limit})"
    for index, item in enumerate(items or []):
        if problem := unstorable_json(item, f"item {index}"):
            return f": {problem}; no instance was created"
    return None


@dataclass(frozen=True)
class Opened:
    created: store.Created
    finished: list[store.Transition]  # groups closed at once: their children are decided next


def open_groups(
    conn: Connection,
    created: store.Created,
    *,
    read: ItemReader,
    topic: str,
    alerts_topic: str,
    now: datetime,
) -> Opened:
    """Instances for the groups among ``created`` (rows opened PROCESSING by the fan-in)."""
    open_ids = [t.log_id for t in created.tasks if t.status == TaskStatus.PROCESSING]
    if not open_ids:
        return Opened(store.Created([], []), [])
    plans = {s.log_id: (s, plan(s, read)) for s in store_maps.map_sources(conn, open_ids)}
    expand = {i: p.tolerated for i, (_, p) in plans.items() if p.status is None}
    resolved = {i: p.items for i, (_, p) in plans.items() if p.status is None and p.items}
    closed = [(i, str(p.status), p.reason) for i, (_, p) in plans.items() if p.status]
    tasks: list[store.CreatedTask] = []
    messages = []
    if expand:
        over = {i: str(s.map["over"]) for i, (s, _) in plans.items()}
        made, refused = _expand(conn, expand, resolved, over, topic=topic, now=now)
        tasks += made.tasks
        messages += made.messages
        closed += refused
    finished: list[store.Transition] = []
    if closed:
        shut = store_maps.close_groups(conn, closed=closed, alerts_topic=alerts_topic, now=now)
        tasks += shut.tasks
        messages += shut.messages
        finished = [store.Transition(t.task_id, t.status, _root(t)) for t in shut.tasks]
    return Opened(store.Created(tasks, messages), finished)


def _expand(
    conn: Connection,
    groups: Mapping[int, int],
    resolved: Mapping[int, list[Any]],
    over: Mapping[int, str],
    *,
    topic: str,
    now: datetime,
) -> tuple[store.Created, list[tuple[int, str, str | None]]]:
    """The instances of every group in one statement, under a savepoint. Blast radius of one:
    if the database refuses a value (a rule the engine cannot know), each group is expanded
    alone, and a group refused is closed ERROR with the reason — never its parent's
    transaction, never the engine's message."""
    try:
        with conn.begin_nested():
            made = store_maps.expand(conn, groups=groups, resolved=resolved, topic=topic, now=now)
    except (DBAPIError, UnicodeError) as exc:
        if (reason := refused_value(exc)) is None:
            raise
    else:
        return made, []
    if len(groups) == 1:
        [log_id] = groups
        return store.Created([], []), [_refused(log_id, over[log_id], reason)]
    tasks: list[store.CreatedTask] = []
    messages = []
    refused = []
    for log_id, allowed in groups.items():
        items = {log_id: resolved[log_id]} if log_id in resolved else {}
        one, closed = _expand(conn, {log_id: allowed}, items, over, topic=topic, now=now)
        tasks += one.tasks
        messages += one.messages
        refused += closed
    return store.Created(tasks, messages), refused


def _refused(log_id: int, over: str, reason: str) -> tuple[int, str, str | None]:
    """A group whose instances the database refused: closed ERROR with the reason."""
    return log_id, str(TaskStatus.ERROR), escaped(f"map.over {over!r}: {reason}")


def _root(task: store.CreatedTask) -> int | None:
    if task.status != TaskStatus.ERROR:
        return None
    return task.root_cause_log_id or task.log_id


@dataclass(frozen=True)
class Counted:
    """What an instance's end feeds into the fan-in (its group's transition, once the last
    instance ended) and the one alert of the failure that exceeds the group's tolerance."""

    transitions: list[store.Transition]
    messages: list[OutgoingMessage]


def count_instance(
    conn: Connection,
    ref: store.AttemptRef,
    result: store.Result,
    *,
    alerts_topic: str,
    now: datetime,
    batch_running: bool = True,
) -> Counted:
    """An instance ended: count it; the last one decides the group (one transition back).
    A failed item within ``tolerated_failures`` is recorded on its row and not alerted; the
    failure that makes the group exceed its tolerance writes the group's one alert. In a batch
    being cancelled the cancel closed the group: the last running instance to end hands the
    group's CANCELLED to the fan-in (its teardown children start then)."""
    counters = store_maps.count_item(
        conn,
        ref=ref,
        status=result.status.value,
        error=result.error,
        alerts_topic=alerts_topic,
        now=now,
    )
    alerts = counters.alerts if counters else []
    if not batch_running:
        done = store_maps.cancelled_group_done(conn, batch_id=ref.batch_id, task_id=ref.task_id)
        return Counted(
            [store.Transition(ref.task_id, TaskStatus.CANCELLED)] if done else [], alerts
        )
    if counters is None or counters.succeeded + counters.failed < counters.total:
        return Counted([], alerts)
    outcome, error = decision(counters)
    decided = store_maps.decide_group(
        conn,
        batch_id=ref.batch_id,
        task_id=ref.task_id,
        status=outcome.value,
        error=error,
        now=now,
    )
    transitions = [store.Transition(t.task_id, t.status, _root(t)) for t in decided.tasks]
    return Counted(transitions, alerts)


def decide_reopened(
    conn: Connection, *, batch_id: str, groups: Mapping[int, store_maps.Counters], now: datetime
) -> list[store.Transition]:
    """resume: the groups a cancel closed were reopened (``store.maps.resume_groups``) with
    their cancelled items; a group whose every item had ended is decided now, once (its
    transition back, for the fan-in)."""
    finished: list[store.Transition] = []
    for task_id, counters in groups.items():
        if counters.succeeded + counters.failed < counters.total:
            continue
        outcome, error = decision(counters)
        decided = store_maps.decide_group(
            conn, batch_id=batch_id, task_id=task_id, status=outcome.value, error=error, now=now
        )
        finished += [store.Transition(t.task_id, t.status, _root(t)) for t in decided.tasks]
    return finished


def decision(counters: store_maps.Counters) -> tuple[TaskStatus, str | None]:
    """The group's outcome once every item ended, and the reason when items failed."""
    if not counters.failed:
        return TaskStatus.SUCCESS, None
    reason = f"{counters.failed} of {counters.total} items failed ({counters.tolerated} tolerated)"
    if counters.failed <= counters.tolerated:
        return TaskStatus.SUCCESS, reason
    return TaskStatus.ERROR, reason


def read_json_lines(
    ref: str, max_items: int, client: Any = None, *, max_bytes: int = MAX_LIST_BYTES
) -> list[Any]:
    """The items of a ``gs://bucket/object`` JSON-lines reference: one JSON value per line
    (blank lines skipped), streamed in chunks from the object's generation seen first (through
    google-cloud-storage, ``STORAGE_EMULATOR_HOST`` honoured); ``ListTooLarge`` as soon as it
    holds more than ``max_items`` items or ``max_bytes`` bytes."""
    bucket, _, name = ref.removeprefix("gs://").partition("/")
    if not bucket or not name:
        raise ValueError(f"{ref!r} is not gs://<bucket>/<object>")
    client = client if client is not None else _storage_client()
    blob = client.bucket(bucket).get_blob(name, timeout=30)
    if blob is None:
        raise FileNotFoundError(f"no object {ref}")
    with blob.open("rb", chunk_size=READ_CHUNK_BYTES, timeout=30) as stream:
        return read_items(stream, ref, max_items=max_items, max_bytes=max_bytes, size=blob.size)


def read_items(
    stream: BinaryIO, where: str, *, max_items: int, max_bytes: int, size: int | None = None
) -> list[Any]:
    """JSON lines from ``stream``, read a chunk at a time: never more than ``max_bytes`` + 1
    bytes and ``max_items`` + 1 items (``ListTooLarge`` naming the limit and ``size``)."""
    lines = _Lines(where, max_items, size)
    pending = b""
    while chunk := stream.read(min(READ_CHUNK_BYTES, max_bytes + 1 - lines.consumed)):
        lines.consumed += len(chunk)
        if lines.consumed > max_bytes:
            actual = f"more than {max_bytes:,}" if size is None else f"{size:,}"
            raise ListTooLarge(
                f"is {actual} bytes, more than the limit of {max_bytes:,} bytes for a list of "
                "items (reading stopped there)"
            )
        *complete, pending = (pending + chunk).split(b"\n")
        for line in complete:
            lines.add(line)
    if pending:
        lines.add(pending)
    return lines.items


@dataclass
class _Lines:
    """The items parsed so far from a JSON-lines stream, and how far it was read."""

    where: str
    max_items: int
    size: int | None
    items: list[Any] = field(default_factory=list)
    consumed: int = 0  # bytes
    number: int = 0  # lines

    def add(self, line: bytes) -> None:
        self.number += 1
        if not line.strip():
            return
        try:
            self.items.append(json.loads(line))
        except ValueError as exc:  # not JSON, or not UTF-8
            raise ValueError(f"{self.where} line {self.number}: not JSON ({exc})") from exc
        if len(self.items) > self.max_items:
            size = "?" if self.size is None else f"{self.size:,}"
            raise ListTooLarge(
                f"has more than max_items ({self.max_items:,}) items: reading stopped at item "
                f"{len(self.items):,} (line {self.number:,}, {self.consumed:,} of {size} bytes "
                "read)"
            )


def _storage_client() -> Any:
    """The process's storage client; against the emulator (``STORAGE_EMULATOR_HOST``) with
    anonymous credentials."""
    from google.auth.credentials import AnonymousCredentials  # noqa: PLC0415 - on first use
    from google.cloud import storage  # noqa: PLC0415 - only mapped tasks with references

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return storage.Client(project="local", credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
    return storage.Client()


def refuse_deferral(map_index: int) -> None:
    """An instance cannot defer its work (a poll message names no instance)."""
    if map_index >= 0:
        raise NonRetryableError("an instance of a mapped task cannot defer its work")


def item_values(item: Any) -> Mapping[str, Any]:
    """The ``{item}`` placeholder, and ``{item.key}`` for each key of an object item."""
    values: dict[str, Any] = {"item": item}
    if isinstance(item, Mapping):
        values |= {f"item.{k}": v for k, v in item.items() if isinstance(k, str)}
    return values
