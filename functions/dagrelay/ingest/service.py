"""``ingest.file``: one GCS object from the inbox to BigQuery, recorded step by step in file_log.

    RECEIVED   claimed by the first notification (INSERT ... ON CONFLICT DO NOTHING RETURNING)
    VALIDATED  content checked against its source; Parquet written to staging/<source>/...
    LOADED     BigQuery load job done (deterministic job id); pipeline triggers checked
    ARCHIVED   raw file copied to archive/<source>/..., then deleted from the inbox
    REJECTED   invalid content: raw file copied to rejected/<source>/..., then deleted

A duplicate notification finds the row and is acknowledged. A row left mid-way (the function was
killed, or an attempt failed and recorded its error) is re-claimed with a checked write by the
next notification or by ``resume_stale`` (the sweep), and resumed from its status.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine as SqlEngine

from dagrelay.engine.core import Clock, Engine
from dagrelay.errors import BadMessage
from dagrelay.ingest import filelog
from dagrelay.ingest.filelog import FileRow
from dagrelay.ingest.loader import Loader
from dagrelay.ingest.rules import InvalidFile, month_of, month_of_name, validate
from dagrelay.ingest.sources import Match, Source, Sources, match_object
from dagrelay.ingest.storage import ObjectGone, ObjectStore
from dagrelay.messages import ObjectFinalized, StartBatch
from dagrelay.states import FileStatus

log = logging.getLogger(__name__)

RESUME_AFTER_S = 600.0  # a row untouched this long is taken to be abandoned by its worker
TERMINAL = (FileStatus.ARCHIVED, FileStatus.REJECTED)


def staging_name(source: str, generation: int, file_name: str) -> str:
    return f"staging/{source}/{generation}/{file_name}.parquet"


def moved_name(area: str, source: str, generation: int, file_name: str) -> str:
    """Where a raw file goes (``archive`` or ``rejected``); the generation keeps a re-sent file
    of the same name from overwriting the first."""
    return f"{area}/{source}/{generation}/{file_name}"


def load_job_id(row: FileRow, generation: int) -> str:
    return f"dagrelay_ingest_{row.file_id}_{generation}"


@dataclass
class Ingestion:
    """One object's ingestion with its collaborators; ``run`` is the whole story."""

    obj: ObjectFinalized
    match: Match
    db: SqlEngine
    store: ObjectStore
    loader: Loader
    engine: Engine
    sources: Sources
    clock: Clock
    resume_after_s: float
    held: FileRow | None = None  # the row as we last wrote it (our fence)

    @property
    def source(self) -> Source:
        return self.match.source

    def where(self) -> tuple[str, int, str]:
        return self.source.name, self.obj.generation, self.match.file_name

    def extra(self, **more: Any) -> dict[str, Any]:
        name = f"gs://{self.obj.bucket}/{self.obj.name}#{self.obj.generation}"
        return {"action": "ingest", "object": name, "source": self.source.name, **more}

    def run(self) -> str:
        row = self.claim()
        if isinstance(row, str):
            return row
        self.held = row
        try:
            return self.advance(row)
        except Exception as exc:
            self.note_failure(exc)
            raise

    def claim(self) -> FileRow | str:
        """Our row, or what to answer when we do not get it."""
        now = self.clock()
        with self.db.begin() as conn:
            row = filelog.claim(conn, obj=self.row_values(), now=now)
            if row is not None:
                log.info("file received", extra=self.extra())
                return row
            found = filelog.existing(
                conn, bucket=self.obj.bucket, name=self.obj.name, generation=self.obj.generation
            )
            if found is None:  # deleted between the two statements: let Pub/Sub retry
                raise RuntimeError("file_log row vanished while claiming")
            if found.row.status in TERMINAL:
                log.info("duplicate notification ignored", extra=self.extra())
                return f"duplicate: {found.row.status.value}"
            stale_before = now - timedelta(seconds=self.resume_after_s)
            taken = filelog.reclaim(conn, found.row, now=now, stale_before=stale_before)
        if taken is None:
            log.info("file in progress elsewhere: notification ignored", extra=self.extra())
            return f"in progress: {found.row.status.value}"
        log.warning("resuming an interrupted ingestion", extra=self.extra(status=taken.status))
        return taken

    def row_values(self) -> dict[str, Any]:
        resource = self.obj.resource
        size = str(resource.get("size", ""))
        return {
            "bucket": self.obj.bucket,
            "name": self.obj.name,
            "generation": self.obj.generation,
            "md5": resource.get("md5Hash"),
            "size_bytes": int(size) if size.isascii() and size.isdigit() else None,
            "source": self.source.name,
            "target_table": self.source.target_table,
        }

    def advance(self, row: FileRow) -> str:
        steps: dict[FileStatus, Callable[[FileRow], FileRow | str]] = {
            FileStatus.RECEIVED: self.validate,
            FileStatus.VALIDATED: self.load,
            FileStatus.LOADED: self.archive,
        }
        while row.status in steps:
            step = steps[row.status](row)
            if isinstance(step, str):
                return step
            row = step
        return row.status.value.lower()

    def validate(self, row: FileRow) -> FileRow | str:
        try:
            data = self.store.read(self.obj.bucket, self.obj.name, self.obj.generation)
        except ObjectGone:
            return self.reject(row, "object generation no longer exists (overwritten or deleted)")
        try:
            rows = validate(data, self.source)
            month_of(self.source, self.match.file_name, rows)
        except InvalidFile as exc:
            return self.reject(row, exc.reason, move=True)
        staged = staging_name(*self.where())
        from dagrelay.ingest.parquet import to_parquet  # noqa: PLC0415 - pyarrow only when converting

        parquet = to_parquet(rows, self.source)
        self.store.write(self.obj.bucket, staged, parquet, "application/vnd.apache.parquet")
        return self.mark(row, FileStatus.VALIDATED)

    def load(self, row: FileRow) -> FileRow | str:
        staged = staging_name(*self.where())
        count = self.loader.load(
            uri=f"gs://{self.obj.bucket}/{staged}",
            table=self.source.target_table,
            columns=self.source.columns,
            job_id=load_job_id(row, self.obj.generation),
        )
        return self.mark(row, FileStatus.LOADED, rows_loaded=count)

    def archive(self, row: FileRow) -> FileRow | str:
        self.start_triggered_batches()
        self.move(moved_name("archive", *self.where()))
        marked = self.mark(row, FileStatus.ARCHIVED)
        if not isinstance(marked, str):
            self.store.delete(self.obj.bucket, self.obj.name, self.obj.generation)
        return marked

    def reject(self, row: FileRow, reason: str, *, move: bool = False) -> FileRow | str:
        log.warning("file rejected: %s", reason, extra=self.extra(reason=reason))
        if move:
            self.move(moved_name("rejected", *self.where()))
        marked = self.mark(row, FileStatus.REJECTED, error=reason)
        if move and not isinstance(marked, str):
            self.store.delete(self.obj.bucket, self.obj.name, self.obj.generation)
        return marked

    def move(self, dest: str) -> None:
        """Copy the raw object to ``dest``; when it is already gone (a resumed move that had
        deleted it), the copy made before must be there."""
        try:
            self.store.copy(self.obj.bucket, self.obj.name, self.obj.generation, dest)
        except ObjectGone:
            if not self.store.exists(self.obj.bucket, dest):
                raise
            log.info("object already moved", extra=self.extra(dest=dest))

    def mark(self, row: FileRow, to: FileStatus, **values: Any) -> FileRow | str:
        with self.db.begin() as conn:
            moved = filelog.transition(conn, row, to, now=self.clock(), **values)
        self.held = moved
        return moved if moved is not None else f"superseded at {row.status.value}"

    def start_triggered_batches(self) -> None:
        """Start each trigger's batch for this file's month when every required source has a
        loaded file for it. Runs after the LOADED commit, so of two files finishing together at
        least one sees both; start_batch is idempotent per (pipeline, batch_id)."""
        month = month_of_name(self.source, self.match.file_name)
        for trigger in self.source.triggers:
            needed = {self.source.name, *trigger.requires}
            with self.db.connect() as conn:
                files = filelog.loaded_files(conn, sorted(needed))
            have = {s for s, name in files if self.month_of_file(s, name) == month}
            if month is None or have != needed:
                continue
            self.start_batch(trigger.pipeline, month)

    def month_of_file(self, source: str, name: str) -> str | None:
        match = match_object(name, self.sources)
        if match is None or match.source.name != source:
            return None
        return month_of_name(match.source, match.file_name)

    def start_batch(self, pipeline: str, month: str) -> None:
        triggered_by = f"ingest:gs://{self.obj.bucket}/{self.obj.name}#{self.obj.generation}"
        msg = StartBatch(pipeline=pipeline, batch_id=month, triggered_by=triggered_by)
        try:
            started = self.engine.start_batch(msg)
        except BadMessage as exc:  # e.g. the pipeline is not defined: the load still stands
            log.error("trigger failed: %s", exc.reason, extra=self.extra(pipeline=pipeline))  # noqa: TRY400
            return
        what = "batch started" if started.created else "batch already started"
        log.info(what, extra=self.extra(pipeline=pipeline, batch_id=month))

    def note_failure(self, exc: BaseException) -> None:
        """Record the error on the row so that the redelivered notification resumes at once."""
        if self.held is not None:
            with self.db.begin() as conn:
                filelog.note_error(conn, self.held, f"{type(exc).__name__}: {exc}"[:2000])
        log.error("ingestion attempt failed: %s", exc, extra=self.extra(), exc_info=exc)
