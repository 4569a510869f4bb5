"""Ingestion (``ingest.file``): GCS object-finalize notifications for ``inbox/<source>/...``
validated, converted to Parquet, loaded to BigQuery, archived or rejected, recorded in file_log,
and pipeline batches started when all the sources of a month have arrived."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine as SqlEngine

from dagrelay.engine.core import Clock, Engine
from dagrelay.ingest import filelog
from dagrelay.ingest.loader import BigQueryLoader, Loader, default_loader
from dagrelay.ingest.service import RESUME_AFTER_S, Ingestion
from dagrelay.ingest.sources import Source, Sources, load_sources, match_object
from dagrelay.ingest.storage import GcsObjectStore, ObjectStore
from dagrelay.ingest.storage import as_object_store as _as_object_store
from dagrelay.messages import ObjectFinalized

__all__ = [
    "BigQueryLoader",
    "GcsObjectStore",
    "Ingestor",
    "Loader",
    "ObjectStore",
    "Source",
    "Sources",
    "default_loader",
    "ingest_object",
    "load_sources",
    "resume_stale",
]

log = logging.getLogger(__name__)


def ingest_object(
    notification: ObjectFinalized,
    *,
    db: SqlEngine,
    storage_client: ObjectStore | Any,
    loader: Loader,
    engine: Engine,
    sources: Sources,
    clock: Clock,
    resume_after_s: float = RESUME_AFTER_S,
) -> str:
    """Ingest one finalized object; returns what happened ("archived", "rejected", "duplicate:
    ARCHIVED", "in progress: VALIDATED", "ignored: ..."). Raises on infrastructure failures
    (the notification is then redelivered and resumes where this attempt stopped).
    ``storage_client`` is an ObjectStore or a google.cloud.storage.Client."""
    match = match_object(notification.name, sources)
    if match is None:
        log.info(
            "object ignored: not under inbox/<source>/",
            extra={"action": "ingest", "object": f"gs://{notification.bucket}/{notification.name}"},
        )
        return "ignored: no source for this object"
    return Ingestion(
        obj=notification,
        match=match,
        db=db,
        store=_as_object_store(storage_client),
        loader=loader,
        engine=engine,
        sources=sources,
        clock=clock,
        resume_after_s=resume_after_s,
    ).run()


def resume_stale(
    *,
    db: SqlEngine,
    storage_client: ObjectStore | Any,
    loader: Loader,
    engine: Engine,
    sources: Sources,
    clock: Clock,
    resume_after_s: float = RESUME_AFTER_S,
    limit: int = 20,
) -> dict[str, str]:
    """The sweep's part: resume files whose worker stopped mid-way and that no notification
    brought back. {gs://bucket/name#generation: what happened}."""
    stale_before = clock() - timedelta(seconds=resume_after_s)
    with db.connect() as conn:
        stale = filelog.stale_files(conn, stale_before=stale_before, limit=limit)
    done: dict[str, str] = {}
    for bucket, name, generation in stale:
        obj = ObjectFinalized(bucket=bucket, name=name, generation=generation, resource={})
        done[f"gs://{bucket}/{name}#{generation}"] = ingest_object(
            obj,
            db=db,
            storage_client=storage_client,
            loader=loader,
            engine=engine,
            sources=sources,
            clock=clock,
            resume_after_s=resume_after_s,
        )
    return done


class Ingestor:
    """Ingestion with its clients, built once per process (dagrelay.router.wiring): what the router
    calls for a GCS notification and the sweeper for stale files."""

    def __init__(
        self,
        *,
        db: SqlEngine,
        storage_client: ObjectStore | Any,
        loader: Loader,
        engine: Engine,
        sources: Sources,
        clock: Clock,
        resume_after_s: float = RESUME_AFTER_S,
    ) -> None:
        self._deps: dict[str, Any] = {
            "db": db,
            "storage_client": storage_client,
            "loader": loader,
            "engine": engine,
            "sources": sources,
            "clock": clock,
            "resume_after_s": resume_after_s,
        }

    def __call__(self, notification: ObjectFinalized) -> str:
        return ingest_object(notification, **self._deps)

    def resume_stale(self) -> int:
        return len(resume_stale(**self._deps))
