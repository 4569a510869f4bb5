"""file_log through the named queries of ``schema/ingest.sql``. Each transition is a checked write
and says whether it landed; the caller decides what a write that did not land means."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from dagrelay.states import FileStatus
from dagrelay.store.queries import query

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileRow:
    """Our hold on a file_log row: its status and the updated_at we last wrote (the fence)."""

    file_id: int
    status: FileStatus
    token: datetime


@dataclass(frozen=True)
class Existing:
    row: FileRow
    error: str | None


def claim(conn: Connection, *, obj: dict[str, Any], now: datetime) -> FileRow | None:
    """Insert the RECEIVED row; None when the object is already known."""
    found = conn.execute(query("ingest_claim_file"), {**obj, "now": now}).one_or_none()
    return None if found is None else FileRow(found.file_id, FileStatus(found.status), now)


def existing(conn: Connection, *, bucket: str, name: str, generation: int) -> Existing | None:
    params = {"bucket": bucket, "name": name, "generation": generation}
    found = conn.execute(query("ingest_get_file"), params).one_or_none()
    if found is None:
        return None
    return Existing(FileRow(found.file_id, FileStatus(found.status), found.updated_at), found.error)


def reclaim(
    conn: Connection, row: FileRow, *, now: datetime, stale_before: datetime
) -> FileRow | None:
    """Take over a row left mid-way (stale, or its last attempt failed); None if someone else
    holds it or it moved on."""
    params = {"file_id": row.file_id, "status": row.status.value, "now": now}
    found = conn.execute(
        query("ingest_reclaim_file"), {**params, "stale_before": stale_before}
    ).one_or_none()
    return None if found is None else FileRow(row.file_id, row.status, found.updated_at)


_MARKS = {
    FileStatus.VALIDATED: "ingest_mark_validated",
    FileStatus.LOADED: "ingest_mark_loaded",
    FileStatus.ARCHIVED: "ingest_mark_archived",
    FileStatus.REJECTED: "ingest_mark_rejected",
}


def transition(
    conn: Connection, row: FileRow, to: FileStatus, *, now: datetime, **values: Any
) -> FileRow | None:
    """``row`` moved to ``to`` (checked: same status and token as we hold); None if it had moved."""
    params = {"file_id": row.file_id, "token": row.token, "now": now, **values}
    found = conn.execute(query(_MARKS[to]), params).one_or_none()
    extra = {"action": "ingest", "file_id": row.file_id, "from": row.status, "to": to}
    if found is None:
        log.warning("file_log transition did not land: row moved on", extra=extra)
        return None
    log.info("file_log %s -> %s", row.status, to, extra=extra)
    return replace(row, status=to, token=found.updated_at)


def note_error(conn: Connection, row: FileRow, error: str) -> bool:
    """Record a failed attempt on the row we hold; the next notification may then resume it."""
    params = {"file_id": row.file_id, "status": row.status.value, "token": row.token}
    return conn.execute(query("ingest_note_error"), {**params, "error": error}).rowcount == 1


def loaded_files(conn: Connection, sources: Sequence[str]) -> list[tuple[str, str]]:
    """(source, name) of every LOADED or ARCHIVED file of these sources."""
    rows = conn.execute(query("ingest_loaded_files"), {"sources": list(sources)}).all()
    return [(r.source, r.name) for r in rows]


def stale_files(
    conn: Connection, *, stale_before: datetime, limit: int
) -> list[tuple[str, str, int]]:
    found = conn.execute(
        query("ingest_stale_files"), {"stale_before": stale_before, "limit": limit}
    ).all()
    return [(r.bucket, r.name, r.generation) for r in found]
