"""Process-wide wiring: settings, database, publisher, registry, engine, router — built once
per process (per Cloud Functions instance) and reused across invocations."""

from __future__ import annotations

from functools import cache

from dagrelay import logs
from dagrelay.config import get_settings
from dagrelay.db import get_engine
from dagrelay.engine import Engine, utcnow
from dagrelay.handlers.registry import default_registry
from dagrelay.publisher import PubSubPublisher
from dagrelay.router import Router


@cache
def get_router() -> Router:
    settings = get_settings()
    logs.configure()
    default_registry.load_plugins()
    db = get_engine()
    engine = Engine(
        db,
        PubSubPublisher(settings.project_id),
        default_registry,
        events_topic=settings.events_topic,
        worker_id=settings.worker_id,
        clock=utcnow,
    )
    return Router(engine, db, utcnow)
