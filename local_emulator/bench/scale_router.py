"""functions-framework source for the scale benchmark: ``functions/main.py``'s router, with the
SQL statements its process sends counted (SQLAlchemy's ``before_cursor_execute``) and the
count written to ``$DAGRELAY_BENCH_STATEMENTS_DIR/<pid>`` twice a second, so the benchmark
reads the database's statements per completion across every instance. Nothing else differs."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import functions_framework
from cloudevents.http import CloudEvent
from sqlalchemy import event

from dagrelay.once import process_wide
from dagrelay.router.wiring import get_router
from dagrelay.store.db import get_engine

STATEMENTS_DIR_ENV = "DAGRELAY_BENCH_STATEMENTS_DIR"


class _Count:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.value = 0
        event.listen(get_engine(), "before_cursor_execute", self.add)
        threading.Thread(target=self.write_forever, daemon=True, name="statements").start()

    def add(self, *args: Any) -> None:
        with self.lock:
            self.value += 1

    def write_forever(self) -> None:
        while True:
            partial = self.path.with_suffix(".partial")
            partial.write_text(str(self.value))
            os.replace(partial, self.path)
            time.sleep(0.5)


@process_wide
def _counted() -> _Count:
    return _Count(Path(os.environ[STATEMENTS_DIR_ENV]) / str(os.getpid()))


@functions_framework.cloud_event
def router(cloud_event: CloudEvent) -> None:
    """As ``functions/main.py``'s router: returning acknowledges; raising redelivers."""
    _counted()
    get_router().handle_push(cloud_event.get_data(), source=cloud_event["source"])
