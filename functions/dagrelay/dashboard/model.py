"""What the dashboard shows, as plain data: the JSON API's payloads, which the HTML pages render
too. Reading is ``store``'s; deciding (durations, root causes) is here and pure."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from dagrelay.dashboard import store

Row = dict[str, Any]
FAILED = "ERROR"
TAKEN_DOWN = "UPSTREAM_FAILED"


def duration_s(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def summary(batch: Row) -> Row:
    counts: dict[str, int] = {k: int(v) for k, v in batch["task_counts"].items()}
    return {
        **batch,
        "task_counts": counts,
        "total_tasks": sum(counts.values()),
        "duration_s": duration_s(batch["created_at"], batch["finished_at"]),
    }


def root_causes(tasks: list[Row]) -> list[Row]:
    """Each failed task (ERROR) with the tasks it took down (UPSTREAM_FAILED naming it)."""
    victims: dict[str, list[str]] = {}
    for task in tasks:
        cause = task.get("root_cause_task")
        if task["status"] == TAKEN_DOWN and cause:
            victims.setdefault(cause, []).append(task["task"])
    causes = {t["task"]: t for t in tasks if t["status"] == FAILED or t["task"] in victims}
    return [
        {
            "task": name,
            "status": causes[name]["status"],
            "error": causes[name]["error"],
            "took_down": sorted(victims.get(name, [])),
        }
        for name in sorted(causes)
    ]


def batch_list(conn: Connection, pipeline: str | None, limit: int) -> Row:
    return {"batches": [summary(b) for b in store.batches(conn, pipeline, limit)]}


def batch_detail(conn: Connection, pipeline: str, batch_id: str) -> Row | None:
    batch = store.batch(conn, pipeline, batch_id)
    if batch is None:
        return None
    tasks = [
        {**t, "duration_s": duration_s(t["started_at"], t["finished_at"])}
        for t in store.batch_tasks(conn, pipeline, batch_id)
    ]
    for task in tasks:
        task.pop("log_id")
    return {
        "batch": summary(batch),
        "tasks": tasks,
        "edges": store.edges(conn, pipeline),
        "attempts": store.batch_attempts(conn, pipeline, batch_id),
        "root_causes": root_causes(tasks),
        "dead_letters": store.batch_dead_letters(conn, pipeline, batch_id),
    }


def pipeline_detail(conn: Connection, pipeline: str, limit: int) -> Row | None:
    tasks = store.pipeline_tasks(conn, pipeline)
    recent = [summary(b) for b in store.batches(conn, pipeline, limit)]
    if not tasks and not recent:
        return None
    return {
        "pipeline": pipeline,
        "tasks": tasks,
        "edges": store.edges(conn, pipeline),
        "batches": recent,
    }
