"""Read-only views of batches for the CLI and the HTTP status function."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from dagrelay.store import transitions as store
from dagrelay.store.db import get_engine
from dagrelay.store.queries import query


def batch_report(
    conn: Connection, batch_id: str, pipeline: str | None = None
) -> list[dict[str, Any]]:
    """Each batch with this id (one per pipeline unless ``pipeline`` is given) and its tasks."""
    batches = (
        conn.execute(query("batch_status"), {"batch_id": batch_id, "pipeline": pipeline})
        .mappings()
        .all()
    )
    tasks = (
        conn.execute(query("batch_tasks"), {"batch_id": batch_id, "pipeline": pipeline})
        .mappings()
        .all()
    )
    dead = store.batch_dead_letters(conn, batch_id, pipeline)
    report = []
    for batch in batches:
        rows = [dict(t) for t in tasks if t["pipeline"] == batch["pipeline"]]
        for row in rows:
            row["duration_s"] = _duration(row["started_at"], row["finished_at"])
        letters = [d for d in dead if d.get("pipeline") in (None, batch["pipeline"])]
        report.append({**dict(batch), "tasks": rows, "dead_letters": letters})
    return report


def _duration(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def status_response(batch_id: str | None, pipeline: str | None) -> tuple[str, int, dict[str, str]]:
    headers = {"Content-Type": "application/json"}
    if not batch_id:
        return json.dumps({"error": "batch_id is required"}), 400, headers
    with get_engine().connect() as conn:
        report = batch_report(conn, batch_id, pipeline)
    if not report:
        return json.dumps({"error": f"no batch {batch_id!r}"}), 404, headers
    return json.dumps({"batches": report}, default=str), 200, headers
