"""What the dashboard shows, as plain data: the JSON API's payloads (schema/openapi.json), which
the HTML pages render too. All of it is drawn from the read model, ``dagrelay.store.reads``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from dagrelay.store import reads

Row = dict[str, Any]
SUMMARY_FIELDS = (
    "pipeline",
    "batch_id",
    "version",
    "status",
    "triggered_by",
    "created_at",
    "finished_at",
    "duration_s",
    "task_counts",
    "total_tasks",
)


def summary(batch: reads.BatchSummary | reads.Batch) -> Row:
    return {k: batch[k] for k in SUMMARY_FIELDS}  # type: ignore[literal-required]


def batch_list(conn: Connection, pipeline: str | None, limit: int) -> Row:
    return {"batches": [summary(b) for b in reads.recent_batches(conn, pipeline, limit)]}


def batch_detail(conn: Connection, pipeline: str, batch_id: str) -> Row | None:
    batch = reads.read_batch(conn, pipeline, batch_id)
    if batch is None:
        return None
    return {
        "batch": summary(batch) | {"params": batch["params"], "start_task": batch["start_task"]},
        "tasks": sorted(batch["tasks"], key=lambda t: t["task"]),
        "edges": batch["edges"],  # the batch's own graph: its version's, not the live rows
        "attempts": batch["attempts"],
        "root_causes": [
            {k: c[k] for k in ("task", "status", "error", "took_down")}
            for c in batch["root_causes"]
            if c["task"] is not None  # the page names causes; lost ones have no row to name
        ],
        "dead_letters": batch["dead_letters"],
    }


def pipeline_detail(conn: Connection, pipeline: str, limit: int) -> Row | None:
    tasks = [{"task": t.pop("name"), **t} for t in reads.pipeline_tasks(conn, pipeline)]
    recent = [summary(b) for b in reads.recent_batches(conn, pipeline, limit)]
    if not tasks and not recent:
        return None
    return {
        "pipeline": pipeline,
        "tasks": tasks,
        "edges": reads.pipeline_edges(conn, pipeline),
        "batches": recent,
    }
