"""The read model: what the CLI, the dashboard and the status function show, read through the
named statements of ``schema/sql/reads.sql``. Nothing here writes.

One typed shape of a batch, ``Batch``: its row, every task of its pipeline with its row in the
batch, every attempt, the root causes of its failures and its dead letters. The CLI's tables,
``explain`` and the dashboard's pages and JSON API are drawn from it; ``legacy_report`` is the
older JSON of the status function (``/?batch_id=``) and of ``dagrelay status --json``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar, cast

from dagrelay.states import TaskStatus
from dagrelay.store import queries
from dagrelay.store.queries import query

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

    from dagrelay.store.direct import Reader

T = TypeVar("T")


class Task(TypedDict):
    """A task of the batch's pipeline and its row in the batch (``status`` None: no row yet)."""

    task: str
    handler: str
    trigger_rule: str
    status: str | None
    attempt: int  # 0 without a row
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    error: str | None
    root_cause_task: str | None  # UPSTREAM_FAILED: the failed task that took it down
    pool: str | None  # the pool its attempt holds or waits for
    ahead: int | None  # QUEUED: the tasks queued before it
    waiting_for: str | None  # a waiting attempt (a sensor): what it waits for
    waiting_since: str | None  # ... and since when (ISO 8601)


class Attempt(TypedDict):
    task: str
    run: int  # the task's runs in the batch: a rerun starts a new run at attempt 1
    attempt: int
    outcome: str | None  # None: still running
    error: str | None
    started_at: datetime
    finished_at: datetime | None
    worker: str | None


class RootCause(TypedDict):
    """A failed task (ERROR) and the tasks its failure took down (UPSTREAM_FAILED); ``task``
    None gathers the tasks whose root cause row is no longer in the batch (a rerun)."""

    task: str | None
    status: str | None
    error: str | None
    attempts: int
    took_down: list[str]


class DeadLetter(TypedDict):
    received_at: datetime
    action: str | None
    pipeline: str | None
    task: str | None
    delivery_attempts: int | None
    source_subscription: str | None
    reason: str


class Deadline(TypedDict):
    """A deadline of the batch (``task`` None) or of one of its tasks (ARCHITECTURE.md,
    "Deadlines"): ``ended_at`` when what it bounds ended (None: still open), ``missed_at`` when
    the sweeper saw it missed, ``failed_at`` when its ``fail`` ended the task."""

    task: str | None
    deadline_at: datetime
    missed_at: datetime | None
    ended_at: datetime | None
    fail: bool
    failed_at: datetime | None


class BatchFields(TypedDict):
    """What every view of a batch shows: ``task_counts`` counts its rows by status
    (``total_tasks`` them all)."""

    pipeline: str
    batch_id: str
    version: int  # the pipeline version the batch runs
    status: str
    triggered_by: str
    created_at: datetime
    finished_at: datetime | None
    duration_s: float | None
    task_counts: dict[str, int]
    total_tasks: int


class BatchSummary(BatchFields):
    """A batch in a list: ``tasks_in_scope`` is how many tasks it runs (the whole pipeline, or
    its start task and descendants), ``tasks_finished`` how many of its rows ended."""

    tasks_in_scope: int
    tasks_finished: int


class Batch(BatchFields):
    """One batch, whole."""

    params: dict[str, Any]
    start_task: str | None
    tasks: list[Task]  # the rows in the order they ran, then the tasks without a row by name
    edges: list[dict[str, str]]  # {parent, child}: the batch's own graph (its version's)
    attempts: list[Attempt]
    root_causes: list[RootCause]
    dead_letters: list[DeadLetter]
    deadlines: list[Deadline]


@contextmanager
def read_only(engine: Engine) -> Iterator[Connection]:
    """A connection whose transaction the database refuses to write in; rolled back at the end."""
    with engine.connect() as conn, conn.begin() as transaction:
        conn.execute(query("read_only"))
        yield conn
        transaction.rollback()


def _rows(conn: Reader, name: str, **params: Any) -> list[dict[str, Any]]:
    return queries.rows(conn, name, params)


def duration_s(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


# -- one batch -----------------------------------------------------------------------------------


def read_batches(conn: Reader, batch_id: str, pipeline: str | None = None) -> list[Batch]:
    """Each batch with this id (one per pipeline unless ``pipeline`` is given), whole."""
    params = {"batch_id": batch_id, "pipeline": pipeline}
    heads = _rows(conn, "batch_heads", **params)
    if not heads:
        return []
    tasks = _rows(conn, "batch_task_rows", **params)
    attempts = _rows(conn, "batch_attempts", **params)
    letters = _rows(conn, "batch_dead_letters", **params)
    edges = _rows(conn, "batch_edges", **params)
    return [
        _batch(
            head,
            [t for t in tasks if t["pipeline"] == head["pipeline"]],
            [a for a in attempts if a["pipeline"] == head["pipeline"]],
            [d for d in letters if d["pipeline"] in (None, head["pipeline"])],
            [
                {"parent": e["parent"], "child": e["child"]}
                for e in edges
                if e["pipeline"] == head["pipeline"]
            ],
            deadlines=_deadlines(conn, head),
        )
        for head in heads
    ]


def read_batch(conn: Reader, pipeline: str, batch_id: str) -> Batch | None:
    found = read_batches(conn, batch_id, pipeline)
    return found[0] if found else None


def _deadlines(conn: Reader, head: Mapping[str, Any]) -> list[Deadline]:
    found = _rows(conn, "batch_deadlines", pipeline=head["pipeline"], batch_id=head["batch_id"])
    return [_pick(Deadline, d | {"task": d["task"] or None}) for d in found]


def deadline_text(deadline: Deadline, now: datetime) -> str:
    """``batch: met 10:00:00`` / ``task load: missed 10:00:00 (ended at 10:04:10)``."""
    what = f"task {deadline['task']}" if deadline["task"] else "batch"
    at = deadline["deadline_at"].isoformat(timespec="seconds")
    ended = deadline["ended_at"]
    if deadline["missed_at"] is None:
        if ended is not None and ended <= deadline["deadline_at"]:
            state = f"met {at}"
        else:
            state = f"due {at}" if now <= deadline["deadline_at"] else f"passed {at}, not yet swept"
        return f"{what}: {state}"
    late = f"ended at {ended.isoformat(timespec='seconds')}" if ended else "still open"
    failed = "; the task was failed" if deadline["failed_at"] is not None else ""
    return f"{what}: missed {at} ({late}){failed}"


def _batch(
    head: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    attempts: Sequence[Mapping[str, Any]],
    letters: Sequence[Mapping[str, Any]],
    edges: list[dict[str, str]],
    *,
    deadlines: list[Deadline],
) -> Batch:
    counts = Counter(r["status"] for r in rows if r["log_id"] is not None)
    return Batch(
        **_fields(head, dict(counts)),
        params=head["params"],
        start_task=head["start_task"],
        tasks=[_task(r) for r in rows],
        edges=edges,
        attempts=[_pick(Attempt, a) for a in attempts],
        root_causes=root_causes(rows),
        dead_letters=[_pick(DeadLetter, d) for d in letters],
        deadlines=deadlines,
    )


def _fields(row: Mapping[str, Any], counts: dict[str, int]) -> BatchFields:
    return BatchFields(
        pipeline=row["pipeline"],
        batch_id=row["batch_id"],
        version=row["version"],
        status=row["status"],
        triggered_by=row["triggered_by"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        duration_s=duration_s(row["created_at"], row["finished_at"]),
        task_counts=counts,
        total_tasks=sum(counts.values()),
    )


def _pick(shape: type[T], row: Mapping[str, Any]) -> T:
    """The columns of ``row`` that the TypedDict ``shape`` names, as that shape."""
    return cast(T, {k: row[k] for k in shape.__annotations__})


def _task(row: Mapping[str, Any]) -> Task:
    return Task(
        task=row["task"],
        handler=row["handler"],
        trigger_rule=row["trigger_rule"],
        status=row["status"],
        attempt=row["attempt"] or 0,
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        duration_s=duration_s(row["started_at"], row["finished_at"]),
        error=row["error"],
        root_cause_task=row["root_cause_task"],
        pool=row["pool"],
        ahead=row["ahead"],
        waiting_for=row["waiting_for"],
        waiting_since=row["waiting_since"],
    )


def waiting(task: Mapping[str, Any]) -> str:
    """What a waiting attempt (a sensor) waits for, e.g. "waiting for gs://b/x, since
    2024-03-01 00:00:00 UTC"; "" for any other task (ARCHITECTURE.md, "Sensors")."""
    what = task.get("waiting_for")
    if task.get("status") != TaskStatus.PROCESSING or not what:
        return ""
    since = task.get("waiting_since")
    try:
        when = datetime.fromisoformat(str(since)).strftime("%Y-%m-%d %H:%M:%S %Z")
    except ValueError:
        when = str(since)
    return f"waiting for {what}, since {when}"


def queue_place(task: Mapping[str, Any]) -> str:
    """Where a QUEUED task waits, e.g. "pool bigquery: 3 ahead"; "" for any other task."""
    if task.get("status") != TaskStatus.QUEUED:
        return ""
    scope = f"pool {task['pool']}" if task.get("pool") else "max_active"
    return f"{scope}: {task.get('ahead') or 0} ahead"


def root_causes(rows: Sequence[Mapping[str, Any]]) -> list[RootCause]:
    """Group one batch's rows (``log_id``, ``task``, ``status``, ``attempt``, ``error``,
    ``root_cause_log_id``) by the failure that caused them: each ERROR row, by task name, with
    the UPSTREAM_FAILED tasks whose ``root_cause_log_id`` is that row, including ERRORs that
    took nothing down; then the UPSTREAM_FAILED tasks whose cause is no longer in the batch."""
    errors = sorted((r for r in rows if r["status"] == TaskStatus.ERROR), key=lambda r: r["task"])
    known = {r["log_id"] for r in errors}
    taken: dict[int | None, list[str]] = {}
    for row in rows:
        if row["status"] == TaskStatus.UPSTREAM_FAILED:
            cause = row["root_cause_log_id"] if row["root_cause_log_id"] in known else None
            taken.setdefault(cause, []).append(row["task"])
    causes = [
        RootCause(
            task=r["task"],
            status=TaskStatus.ERROR,
            error=r["error"],
            attempts=r["attempt"],
            took_down=sorted(taken.get(r["log_id"], [])),
        )
        for r in errors
    ]
    if None in taken:
        causes.append(
            RootCause(task=None, status=None, error=None, attempts=0, took_down=sorted(taken[None]))
        )
    return causes


def legacy_report(batch: Batch) -> dict[str, Any]:
    """The status function's (and ``dagrelay status --json``'s) JSON of a batch: its row, its
    task rows in the order they ran, its dead letters."""
    return {
        "pipeline": batch["pipeline"],
        "batch_id": batch["batch_id"],
        "version": batch["version"],
        "status": batch["status"],
        "params": batch["params"],
        "triggered_by": batch["triggered_by"],
        "created_at": batch["created_at"],
        "finished_at": batch["finished_at"],
        "tasks": [
            {
                "pipeline": batch["pipeline"],
                "task": t["task"],
                "status": t["status"],
                "attempt": t["attempt"],
                "started_at": t["started_at"],
                "finished_at": t["finished_at"],
                "error": t["error"],
                "root_cause_task": t["root_cause_task"],
                "duration_s": t["duration_s"],
            }
            for t in batch["tasks"]
            if t["status"] is not None
        ],
        "dead_letters": batch["dead_letters"],
    }


def batch_report(conn: Reader, batch_id: str, pipeline: str | None = None) -> list[dict[str, Any]]:
    """``legacy_report`` of each batch with this id (one per pipeline unless ``pipeline``)."""
    return [legacy_report(b) for b in read_batches(conn, batch_id, pipeline)]


# -- lists of batches ----------------------------------------------------------------------------


def recent_batches(conn: Reader, pipeline: str | None, limit: int) -> list[BatchSummary]:
    """The latest batches, newest first, optionally of one pipeline."""
    rows = _rows(conn, "recent_batches", pipeline=pipeline, limit=limit)
    return [
        BatchSummary(
            **_fields(row, {k: int(v) for k, v in row["task_counts"].items()}),
            tasks_in_scope=row["tasks_in_scope"],
            tasks_finished=row["tasks_finished"],
        )
        for row in rows
    ]


def batch_statuses(conn: Reader, pipeline: str, batch_ids: Sequence[str]) -> dict[str, str]:
    """{batch_id: status} of those of ``batch_ids`` that exist in the pipeline."""
    rows = _rows(conn, "batch_statuses", pipeline=pipeline, batch_ids=list(batch_ids))
    return {row["batch_id"]: row["status"] for row in rows}


# -- pipelines -----------------------------------------------------------------------------------


def pipeline_names(conn: Reader) -> list[str]:
    """The pipelines that have tasks."""
    return [r["pipeline"] for r in _rows(conn, "pipelines_with_tasks")]


def pipelines_shown(conn: Reader) -> list[str]:
    """The pipelines that have tasks or batches."""
    return [r["pipeline"] for r in _rows(conn, "pipelines_with_tasks_or_batches")]


def pipeline_tasks(conn: Reader, pipeline: str) -> list[dict[str, Any]]:
    """A pipeline's tasks with every column a pipeline file can set, by name."""
    return _rows(conn, "export_pipeline_tasks", pipeline=pipeline)


def pipeline_edges(conn: Reader, pipeline: str) -> list[dict[str, str]]:
    """A pipeline's edges as {parent, child} names."""
    return _rows(conn, "export_pipeline_edges", pipeline=pipeline)


def pipeline_parents(conn: Reader, pipeline: str) -> dict[str, list[str]]:
    """{task: its parents} of the pipeline's tasks that have parents."""
    parents: dict[str, list[str]] = {}
    for edge in pipeline_edges(conn, pipeline):
        parents.setdefault(edge["child"], []).append(edge["parent"])
    return parents


def batch_pipelines(conn: Reader, batch_id: str) -> list[str]:
    """The pipelines that have a batch with this id (an id is unique per pipeline only)."""
    return [r["pipeline"] for r in _rows(conn, "batch_pipelines", batch_id=batch_id)]


# -- one task in a batch -------------------------------------------------------------------------


def batch_rows(conn: Reader, pipeline: str, batch_id: str) -> dict[str, str | None]:
    """{task: its status in the batch, or None} for every task of the pipeline."""
    rows = _rows(conn, "batch_rows", pipeline=pipeline, batch_id=batch_id)
    return {row["name"]: row["status"] for row in rows}


def batch_parents(conn: Reader, pipeline: str, batch_id: str) -> dict[str, list[str]]:
    """{task: its parents} in the batch's version."""
    parents: dict[str, list[str]] = {}
    for edge in _rows(conn, "batch_parents", pipeline=pipeline, batch_id=batch_id):
        parents.setdefault(edge["child"], []).append(edge["parent"])
    return parents


def rerun_preview(
    conn: Reader, pipeline: str, batch_id: str, task: str, downstream: bool
) -> list[dict[str, Any]]:
    """The rows a rerun would reset: name, status, attempt."""
    params = {"pipeline": pipeline, "batch_id": batch_id, "task": task, "downstream": downstream}
    return _rows(conn, "rerun_preview", **params)


def task_history(conn: Reader, pipeline: str, batch_id: str, task: str) -> list[dict[str, Any]]:
    """Every attempt of the task in the batch, across reruns, oldest first."""
    return _rows(conn, "task_history", pipeline=pipeline, batch_id=batch_id, task=task)


def batch_outputs(conn: Reader, pipeline: str, batch_id: str) -> dict[str, Any]:
    """{task: its output} of the batch's rows."""
    rows = _rows(conn, "batch_outputs", pipeline=pipeline, batch_id=batch_id)
    return {row["task"]: row["output"] for row in rows}


def batch_items(conn: Reader, pipeline: str, batch_id: str) -> dict[str, list[dict[str, Any]]]:
    """{mapped task: its instances by index (map_index, item, status, attempt, output, error)}."""
    items: dict[str, list[dict[str, Any]]] = {}
    for row in _rows(conn, "batch_items", pipeline=pipeline, batch_id=batch_id):
        items.setdefault(row.pop("task"), []).append(row)
    return items


def task_row(conn: Reader, pipeline: str, batch_id: str, task: str) -> dict[str, Any] | None:
    found = _rows(conn, "task_row", pipeline=pipeline, batch_id=batch_id, task=task)
    return found[0] if found else None


def status_response(batch_id: str | None, pipeline: str | None) -> tuple[str, int, dict[str, str]]:
    """The status function's answer to ``/?batch_id=`` (JSON body, HTTP status, headers)."""
    headers = {"Content-Type": "application/json"}
    if not batch_id:
        return json.dumps({"error": "batch_id is required"}), 400, headers
    from dagrelay.store.db import get_engine  # noqa: PLC0415 - the CLI reads without it

    with get_engine().connect() as conn:
        report = batch_report(conn, batch_id, pipeline)
    if not report:
        return json.dumps({"error": f"no batch {batch_id!r}"}), 404, headers
    if len(report) > 1:  # batch ids are unique per pipeline only: never guess which
        names = [r["pipeline"] for r in report]
        error = f"batch {batch_id!r} exists in pipelines {', '.join(names)}: add &pipeline="
        return json.dumps({"error": error, "pipelines": names}), 409, headers
    return json.dumps({"batches": report}, default=str), 200, headers


# -- the dashboard's pages -----------------------------------------------------------------------


def batch_edges(conn: Reader, pipeline: str, batch_id: str) -> list[dict[str, str]]:
    """The edges a batch runs, as {parent, child} names: its version's, not the live rows."""
    rows = _rows(conn, "batch_edges", batch_id=batch_id, pipeline=pipeline)
    return [{"parent": r["parent"], "child": r["child"]} for r in rows]


def batch_version(conn: Reader, pipeline: str, batch_id: str) -> int | None:
    """The number of the pipeline version a batch runs; None: no such batch."""
    rows = _rows(conn, "batch_heads", batch_id=batch_id, pipeline=pipeline)
    return rows[0]["version"] if rows else None


def task_in_batch(conn: Reader, pipeline: str, batch_id: str, task: str) -> dict[str, Any] | None:
    """A task's definition, the batch's params and the task's row in the batch (``status``
    None: no row yet); None if the batch or the task does not exist."""
    found = _rows(conn, "dashboard_task", pipeline=pipeline, batch_id=batch_id, task=task)
    return found[0] if found else None


def task_attempts(conn: Reader, pipeline: str, batch_id: str, task: str) -> list[dict[str, Any]]:
    """Every attempt of the task in the batch, oldest first, with its ``run`` and traceback."""
    return _rows(conn, "dashboard_task_attempts", pipeline=pipeline, batch_id=batch_id, task=task)


def pipeline_grid(conn: Reader, pipeline: str, limit: int) -> list[dict[str, Any]]:
    """The latest batches of a pipeline, newest first, each with ``statuses`` {task: status}."""
    return _rows(conn, "dashboard_grid", pipeline=pipeline, limit=limit)


def rejected_messages(conn: Reader, limit: int) -> list[dict[str, Any]]:
    """The latest rejected messages, newest first (``data`` base64 as received)."""
    return _rows(conn, "dashboard_rejected", limit=limit)


def dead_letters(conn: Reader, limit: int) -> list[dict[str, Any]]:
    """The latest dead letters, newest first (``data`` base64 as received)."""
    return _rows(conn, "dashboard_dead_letters", limit=limit)


# -- triggering and rejected messages ------------------------------------------------------------


def batch_head(conn: Reader, pipeline: str, batch_id: str) -> dict[str, Any] | None:
    """A batch's status, params, triggered_by, trigger_message_id and times; None if none."""
    found = _rows(conn, "batch_head", pipeline=pipeline, batch_id=batch_id)
    return found[0] if found else None


def rejected_page(
    conn: Reader, *, since: datetime | None, before_id: int | None, page: int
) -> list[dict[str, Any]]:
    """A page of rejected messages, newest first (``before_id``: the last id of the previous
    page): message_id, received_at, attributes, data (as stored), payload_bytes, reason."""
    return _rows(conn, "rejected_messages_page", since=since, before_id=before_id, page=page)


def rejection_of(conn: Reader, message_id: str, request_id: str) -> dict[str, Any] | None:
    """The router's rejection of a message a command published (reason, received_at)."""
    found = _rows(conn, "rejection_of_request", message_id=message_id, request_id=request_id)
    return found[0] if found else None
