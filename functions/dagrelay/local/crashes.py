"""Crash injection: engine hooks (``dagrelay.engine.hooks``) that make the process die at a
named point of a task's run, to prove that a crash at any of them loses nothing and does nothing
twice. Installed only by tests and the local stack (``dagrelay.local.crash_router``), never by
production wiring.

A spec such as ``after_claim:load_sales,after_commit:*`` arms points per task. Each (point,
task) fires once; with a ``marker_dir`` the "once" holds across processes, so a restarted worker
gets past it. ``from_env`` reads the spec from ``LOCAL_CRASH_POINTS`` (and the marker directory
from ``LOCAL_CRASH_MARKER_DIR``): the local stack's own variables, not dagrelay settings.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path

from dagrelay.engine.hooks import HookPoint as CrashPoint

__all__ = ["CrashInjector", "CrashPoint", "InjectedCrash"]

POINTS_ENV = "LOCAL_CRASH_POINTS"
MARKER_DIR_ENV = "LOCAL_CRASH_MARKER_DIR"
EXIT_CODE = 86


class InjectedCrash(BaseException):
    """Raised at an armed crash point when the injector does not exit the process."""


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

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> CrashInjector | None:
        """The process-killing injector the environment arms, or None (no crash points)."""
        spec = env.get(POINTS_ENV)
        if not spec:
            return None
        marker_dir = env.get(MARKER_DIR_ENV)
        return cls.parse(
            spec, exit_process=True, marker_dir=Path(marker_dir) if marker_dir else None
        )

    def at(self, point: CrashPoint, task: str) -> None:
        tasks = self.armed.get(point)
        if not tasks or not ({task, "*"} & tasks) or not self._first_time(point, task):
            return
        if self.exit_process:
            os._exit(EXIT_CODE)  # the process dies here, as a killed function would
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
