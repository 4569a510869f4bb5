"""Process-wide wiring: settings, database, publisher, registry, engine, router — built once
per process (per Cloud Functions instance) and reused across invocations."""

from __future__ import annotations

from functools import cache

from dagrelay import logs
from dagrelay.config import get_settings
from dagrelay.db import get_engine
from dagrelay.engine import Engine, utcnow
from dagrelay.faults import CrashInjector
from dagrelay.handlers.registry import default_registry
from dagrelay.publisher import PubSubPublisher
from dagrelay.router import Router


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
    return Router(engine, db, utcnow, dead_letter_topic=settings.dead_letter_topic)
