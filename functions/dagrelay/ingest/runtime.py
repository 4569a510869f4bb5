"""What the ingestion tasks work with: the database, the object store, the BigQuery loader, the
sources, a way to start a pipeline batch, the clock. Handlers are plain functions registered by
name, so the process installs its runtime once (``dagrelay.router.wiring``; tests install their
own) and the handlers read it with ``current()``."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine as SqlEngine

from dagrelay.errors import ConfigError
from dagrelay.ingest.loader import Loader
from dagrelay.ingest.sources import Sources
from dagrelay.ingest.storage import ObjectStore
from dagrelay.messages import StartBatch


@dataclass(frozen=True)
class Runtime:
    db: SqlEngine
    store: ObjectStore
    loader: Loader
    sources: Sources
    start_batch: Callable[[StartBatch], object]  # Engine.start_batch: idempotent per batch
    clock: Callable[[], datetime]
    inbox_bucket: str
    workdir: Path | None = None  # where downloads and Parquet files are written (temp dirs)


_installed: list[Runtime] = []
_lock = threading.Lock()


def install(runtime: Runtime | None) -> None:
    """Make ``runtime`` the process's (None: uninstall)."""
    with _lock:
        _installed[:] = [runtime] if runtime is not None else []


def current() -> Runtime:
    with _lock:
        if not _installed:
            raise ConfigError("ingestion is not configured in this process (no runtime installed)")
        return _installed[0]
