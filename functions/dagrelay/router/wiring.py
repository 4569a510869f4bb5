"""The one place that builds the engine and the router. The app (``get_router``), the CLI and
the tests call ``build_engine``; a test passes its fakes (database, publisher, clock, hooks) as
arguments instead of patching globals. Built once per process (per Cloud Functions instance)
and reused across invocations."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine as SqlEngine

from dagrelay import capacity, ingest, logs, tracing
from dagrelay.config import Settings, get_settings
from dagrelay.engine.core import Clock, Engine, utcnow
from dagrelay.engine.hooks import EngineHooks
from dagrelay.handlers.registry import HandlerRegistry, default_registry
from dagrelay.ingest.loader import BigQueryLoader
from dagrelay.ingest.storage import GcsObjectStore
from dagrelay.once import process_wide
from dagrelay.pubsub import PubSubPublisher
from dagrelay.router.dispatch import Router
from dagrelay.store.db import get_engine
from dagrelay.store.outbox import Publisher

log = logging.getLogger(__name__)


def build_engine(
    settings: Settings,
    *,
    db: SqlEngine | None = None,
    publisher: Publisher | None = None,
    registry: HandlerRegistry | None = None,
    clock: Clock | None = None,
    hooks: EngineHooks | None = None,
    rng: random.Random | None = None,
    worker_id: str | None = None,
) -> Engine:
    """The engine for ``settings``; each part left out is the production one (the process's
    database pool, Pub/Sub, the default registry with its plugins, the wall clock, no hooks)."""
    if registry is None:
        registry = default_registry
        registry.load_plugins(settings.handler_modules)
    return Engine(
        db if db is not None else get_engine(),
        publisher if publisher is not None else PubSubPublisher(settings.project_id),
        registry,
        events_topic=settings.events_topic,
        alerts_topic=settings.alerts_topic,
        worker_id=worker_id or settings.worker_id,
        clock=clock or utcnow,
        rng=rng,
        hooks=hooks,
    )


def build_router(settings: Settings, *, hooks: EngineHooks | None = None) -> Router:
    """The router of a function instance: the engine, ingestion on it, dead letters."""
    logs.configure()
    tracing.configure(
        settings.tracing,
        project_id=settings.project_id,
        sample_ratio=settings.tracing_sample_ratio,
    )
    log_capacity(settings)
    db = get_engine()
    engine = build_engine(settings, db=db, hooks=hooks)
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
    return Router(
        engine,
        db,
        utcnow,
        dead_letter_topic=settings.dead_letter_topic,
        ingest=ingest.Ingestor(runtime),
    )


def log_capacity(settings: Settings) -> bool:
    """Check the deployment against the capacity model (dagrelay.capacity) and say so in one
    line: ERROR when it does not hold (connection errors ahead), INFO otherwise."""
    holds, line = capacity.startup_report(
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout_s=settings.db_pool_timeout_s,
        request_concurrency=settings.request_concurrency,
        router_instances=settings.router_max_instances,
        max_connections=settings.db_max_connections,
        other_connections=settings.db_other_connections,
    )
    log.log(logging.INFO if holds else logging.ERROR, line, extra={"capacity_holds": holds})
    return holds


@process_wide
def get_router() -> Router:
    """The instance's router, built by the first request (the others wait for it)."""
    return build_router(get_settings())


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
