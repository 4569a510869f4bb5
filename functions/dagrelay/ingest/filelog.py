"""file_log, the ingestion ledger, through the named queries of ``schema/sql/ingest.sql``. Each
transition is a checked write and says whether it landed; the caller decides what a write that
did not land means."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from dagrelay.bounds import stored_error
from dagrelay.states import FileStatus
from dagrelay.store.queries import query

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileRow:
    file_id: int
    bucket: str
    name: str
    generation: int
    md5: str | None
    source: str | None
    target_table: str | None
    batch_id: str | None
    status: FileStatus
    rows_loaded: int | None
    error: str | None
    load_job: str | None
    duplicate_of: int | None

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket}/{self.name}#{self.generation}"


@dataclass(frozen=True)
class Earlier:
    """Another file of the source already loaded (or on its way) — see ``ingest_earlier_files``."""

    file_id: int
    uri: str
    md5: str | None


def claim(conn: Connection, values: dict[str, Any], now: datetime) -> int | None:
    """Record the object RECEIVED; its file_id, or None when it is already recorded."""
    return conn.execute(query("ingest_claim_file"), {**values, "now": now}).scalar_one_or_none()


def record_rejected(conn: Connection, values: dict[str, Any], error: str, now: datetime) -> bool:
    """Record a refused notification REJECTED with ``error``; False if already recorded."""
    params = {**values, "error": stored_error(error), "now": now}
    found = conn.execute(query("ingest_record_rejected"), params)
    return found.scalar_one_or_none() is not None


def get(conn: Connection, *, bucket: str, name: str, generation: int) -> FileRow | None:
    params = {"bucket": bucket, "name": name, "generation": generation}
    found = conn.execute(query("ingest_get_file"), params).mappings().one_or_none()
    if found is None:
        return None
    return FileRow(**{**found, "status": FileStatus(found["status"])})


def earlier_files(conn: Connection, row: FileRow, md5: str) -> list[Earlier]:
    """Lock the source's decisions (until commit), then its other loaded files with this
    content or this name."""
    conn.execute(query("ingest_lock_source"), {"source": row.source})
    params = {
        "file_id": row.file_id,
        "source": row.source,
        "md5": md5,
        "bucket": row.bucket,
        "name": row.name,
    }
    return [
        Earlier(r.file_id, f"gs://{r.bucket}/{r.name}#{r.generation}", r.md5)
        for r in conn.execute(query("ingest_earlier_files"), params)
    ]


_MARKS = {
    FileStatus.VALIDATED: "ingest_mark_validated",
    FileStatus.DUPLICATE: "ingest_mark_duplicate",
    FileStatus.REJECTED: "ingest_mark_rejected",
    FileStatus.LOADED: "ingest_mark_loaded",
    FileStatus.ARCHIVED: "ingest_mark_archived",
}


def mark(conn: Connection, row: FileRow, to: FileStatus, now: datetime, **values: Any) -> bool:
    """``row`` moved to ``to`` (checked on the status it leaves); False if it had moved on."""
    params = {"file_id": row.file_id, "now": now, **values}
    if params.get("error") is not None:
        params["error"] = stored_error(params["error"])
    landed = conn.execute(query(_MARKS[to]), params).scalar_one_or_none() is not None
    extra = {"action": "ingest", "file_id": row.file_id, "object": row.uri, "to": to}
    if landed:
        log.info("file_log -> %s", to, extra=extra)
    else:
        log.info("file_log -> %s did not land: the row had moved on", to, extra=extra)
    return landed


def set_load_job(
    conn: Connection, row: FileRow, job_id: str, previous: str | None, now: datetime
) -> bool:
    params = {"file_id": row.file_id, "load_job": job_id, "previous": previous, "now": now}
    return conn.execute(query("ingest_set_load_job"), params).scalar_one_or_none() is not None


def loaded_files(conn: Connection, sources: Sequence[str]) -> list[tuple[str, str]]:
    """(source, name) of every LOADED or ARCHIVED file of these sources."""
    rows = conn.execute(query("ingest_loaded_files"), {"sources": list(sources)}).all()
    return [(r.source, r.name) for r in rows]
