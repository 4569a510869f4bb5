"""Process-wide wiring: settings, database, publisher, registry, engine, router — built once
per process (per Cloud Functions instance) and reused across invocations."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import cache
from typing import Any

from dagrelay import ingest, logs
from dagrelay.config import get_settings
from dagrelay.engine.core import Engine, utcnow
from dagrelay.engine.faults import CrashInjector
from dagrelay.handlers.registry import default_registry
from dagrelay.ingest.loader import BigQueryLoader
from dagrelay.ingest.storage import GcsObjectStore
from dagrelay.pubsub import PubSubPublisher
from dagrelay.router.dispatch import Router
from dagrelay.store.db import get_engine


@cache
def get_router() -> Router:
    settings = get_settings()
    logs.configure()
    default_registry.load_plugins()
    db = get_engine()
    crashes = None
    if settings.crash_points:
        crashes = CrashInjector.parse(
            settings.crash_points, exit_process=True, marker_dir=settings.crash_marker_dir
        )
    engine = Engine(
        db,
        PubSubPublisher(settings.project_id),
        default_registry,
        events_topic=settings.events_topic,
        alerts_topic=settings.alerts_topic,
        worker_id=settings.worker_id,
        clock=utcnow,
        crashes=crashes,
    )
    runtime = ingest.Runtime(
        db=db,
        store=GcsObjectStore(_Lazy(lambda: _storage_client(settings.project_id))),
        loader=BigQueryLoader(),
        sources=ingest.load_sources(settings.sources_file),
        start_batch=engine.start_batch,
        clock=utcnow,
        inbox_bucket=settings.inbox_bucket,
        workdir=settings.ingest_workdir,
    )
    ingest.install(runtime)
    ingestor = ingest.Ingestor(runtime)
    return Router(engine, db, utcnow, dead_letter_topic=settings.dead_letter_topic, ingest=ingestor)


def _storage_client(project: str) -> Any:
    from google.cloud.storage import Client  # noqa: PLC0415 - imported by the first GCS call

    return Client(project=project)


class _Lazy:
    """A Google client made on first use: most invocations never touch GCS or BigQuery, and
    a client needs credentials (or its emulator's variable) only then."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._client: Any = None

    def get(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._make()
            return self._client

    def bucket(self, *args: Any, **kwargs: Any) -> Any:
        return self.get().bucket(*args, **kwargs)
