"""``process_wide``: a value built once per process, whichever thread asks first.

A router instance serves many requests at once (request concurrency, ARCHITECTURE.md
"Capacity"); ``functools.cache`` lets every thread of a cold start build its own value — a
database pool each, more connections than the capacity model counts. Here the first caller
builds under a lock and the others wait for its value; a build that fails is tried again by
the next caller."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar, cast

T = TypeVar("T")


class CacheInfo(NamedTuple):
    currsize: int  # 1 once built (functools.cache's field of the same name)


class ProcessWide(Generic[T]):
    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._value: T | None = None
        self._built = False
        self.__doc__ = build.__doc__
        self.__name__ = getattr(build, "__name__", "process_wide")

    def __call__(self) -> T:
        if not self._built:
            with self._lock:
                if not self._built:
                    self._value = self._build()
                    self._built = True
        return cast("T", self._value)

    def cache_info(self) -> CacheInfo:
        return CacheInfo(int(self._built))

    def cache_clear(self) -> None:
        """Forget the value (tests; the next caller builds a new one)."""
        with self._lock:
            self._value, self._built = None, False


def process_wide(build: Callable[[], T]) -> ProcessWide[T]:
    return ProcessWide(build)
