"""Crash points: named places in the engine where a test can make the process die, to prove
that a crash at any of them loses nothing and does nothing twice. Disarmed in production.

Armed by the ``crash_points`` setting (``DAGRELAY_CRASH_POINTS``), e.g.
``after_claim:load_sales,after_commit:*``. Each (point, task) fires once; with a
``crash_marker_dir`` the "once" holds across processes, so a restarted worker gets past it.
"""

from __future__ import annotations

import os
import threading
from enum import StrEnum
from pathlib import Path


class CrashPoint(StrEnum):
    AFTER_CLAIM = "after_claim"  # the claim committed; the handler has not started
    IN_HANDLER = "in_handler"  # the handler is running
    AFTER_HANDLER = "after_handler"  # the handler returned; its result is not committed
    AFTER_COMMIT = "after_commit"  # the result and the children are committed; nothing published


class InjectedCrash(BaseException):
    """Raised at an armed crash point when the injector is in "raise" mode."""


class CrashInjector:
    def __init__(
        self,
        armed: dict[CrashPoint, set[str]],
        *,
        exit_process: bool = False,
        marker_dir: Path | None = None,
    ) -> None:
        self.armed = armed
        self.exit_process = exit_process
        self.marker_dir = marker_dir
        self._fired: set[tuple[CrashPoint, str]] = set()
        self._lock = threading.Lock()

    @classmethod
    def parse(cls, spec: str, **kwargs: object) -> CrashInjector:
        armed: dict[CrashPoint, set[str]] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            point, _, task = item.partition(":")
            try:
                armed.setdefault(CrashPoint(point), set()).add(task or "*")
            except ValueError:
                known = ", ".join(p.value for p in CrashPoint)
                raise ValueError(f"unknown crash point {point!r} (known: {known})") from None
        return cls(armed, **kwargs)  # type: ignore[arg-type]

    def hit(self, point: CrashPoint, task: str) -> None:
        tasks = self.armed.get(point)
        if not tasks or not ({task, "*"} & tasks) or not self._first_time(point, task):
            return
        if self.exit_process:
            os._exit(86)  # the process dies here, as a killed function would
        raise InjectedCrash(f"injected crash at {point} of task {task}")

    def _first_time(self, point: CrashPoint, task: str) -> bool:
        with self._lock:
            if (point, task) in self._fired:
                return False
            self._fired.add((point, task))
        if self.marker_dir is None:
            return True
        self.marker_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.marker_dir / f"{point}-{task}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        os.close(fd)
        return True
