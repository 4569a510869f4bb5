"""``process_wide``: a value built once per process, whichever thread asks first.

A router instance serves many requests at once (request concurrency, ARCHITECTURE.md
"Capacity"); ``functools.cache`` lets every thread of a cold start build its own value — a
database pool each, more connections than the capacity model counts. Here the first caller
builds under a lock and the others wait for its value; a build that fails is tried again by
the next caller. A value that holds resources (a database pool) names its ``close``: forgetting
the value closes it, rather than leaving its connections open until the garbage collector
finds them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar, cast, overload

T = TypeVar("T")


class CacheInfo(NamedTuple):
    currsize: int  # 1 once built (functools.cache's field of the same name)


class ProcessWide(Generic[T]):
    def __init__(self, build: Callable[[], T], close: Callable[[T], object] | None = None) -> None:
        self._build = build
        self._close = close
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
        """Forget the value (tests, the CLI at the end of a verb; the next caller builds a new
        one), closing it first if it has a ``close``."""
        with self._lock:
            value, built = self._value, self._built
            self._value, self._built = None, False
        if built and self._close is not None:
            self._close(cast("T", value))


@overload
def process_wide(build: Callable[[], T], /) -> ProcessWide[T]: ...


@overload
def process_wide(
    *, close: Callable[[T], object]
) -> Callable[[Callable[[], T]], ProcessWide[T]]: ...


def process_wide(
    build: Callable[[], T] | None = None, /, *, close: Callable[[T], object] | None = None
) -> ProcessWide[T] | Callable[[Callable[[], T]], ProcessWide[T]]:
    """``@process_wide`` or ``@process_wide(close=...)`` on a function that builds the value."""
    if build is None:
        return lambda wrapped: ProcessWide(wrapped, close)
    return ProcessWide(build, close)
