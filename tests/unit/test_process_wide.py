"""A process-wide value is built once, however many request threads of a cold instance ask
for it at the same moment (functools.cache builds one per thread: a pool each)."""

from __future__ import annotations

import threading
import time

import pytest

from dagrelay.once import ProcessWide, process_wide
from dagrelay.router import wiring
from dagrelay.store import db

THREADS = 8


def test_concurrent_first_calls_build_once() -> None:
    entered = 0
    lock = threading.Lock()

    def build() -> object:
        nonlocal entered
        with lock:
            entered += 1
        deadline = time.monotonic() + 0.5  # long enough for every thread to ask meanwhile
        while time.monotonic() < deadline and entered < THREADS:
            time.sleep(0.005)
        return object()

    get = process_wide(build)
    barrier = threading.Barrier(THREADS)
    values: list[object] = []

    def ask() -> None:
        barrier.wait(timeout=10)
        values.append(get())

    threads = [threading.Thread(target=ask) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert entered == 1
    assert len(values) == THREADS
    assert len({id(v) for v in values}) == 1
    assert get.cache_info().currsize == 1


def test_a_failed_build_is_tried_again() -> None:
    calls = 0

    def build() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("first try fails")
        return calls

    get = process_wide(build)
    with pytest.raises(ConnectionError):
        get()
    assert get() == 2
    assert get() == 2
    get.cache_clear()
    assert get.cache_info().currsize == 0


def test_the_pool_and_the_router_are_built_once_per_process() -> None:
    assert isinstance(db.get_engine, ProcessWide)
    assert isinstance(wiring.get_router, ProcessWide)


def test_a_forgotten_value_is_closed_once_and_an_unbuilt_one_not_at_all() -> None:
    closed: list[list[int]] = []

    @process_wide(close=closed.append)
    def get() -> list[int]:
        return [len(closed)]

    get.cache_clear()
    assert closed == []  # nothing built, nothing to close
    first = get()
    get.cache_clear()
    get.cache_clear()
    assert closed == [first]
    assert get() is not first  # built afresh
