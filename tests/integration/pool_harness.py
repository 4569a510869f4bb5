"""Worker threads that drive the real engine the way pull workers do (each message delivered
2-3 times, in any order), and the overlap of attempts read back from task_attempts."""

from __future__ import annotations

import json
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, text

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.handlers.registry import HandlerContext
from dagrelay.messages import RunTask
from dagrelay.store.outbox import InMemoryPublisher
from tests.integration.helpers import EVENTS_TOPIC, as_run_task

HARNESS = "tests.integration.pool_harness"


class Running:
    """Handlers running right now, per pool, and the most seen at once (in-process)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now: dict[str, int] = {}
        self.most: dict[str, int] = {}

    def enter(self, pool: str) -> None:
        with self.lock:
            self.now[pool] = self.now.get(pool, 0) + 1
            self.most[pool] = max(self.most.get(pool, 0), self.now[pool])

    def leave(self, pool: str) -> None:
        with self.lock:
            self.now[pool] -= 1


RUNNING = Running()
WORK_S = 0.02  # a handler's work: long enough for claims to meet a full pool


def pooled_work(context: HandlerContext, pool: str) -> dict[str, Any]:
    RUNNING.enter(pool)
    try:
        time.sleep(WORK_S)  # the work itself, not synchronisation
    finally:
        RUNNING.leave(pool)
    return {"task": context.task}


def wall_clock() -> datetime:
    return datetime.now(UTC)


class Workers:
    """``count`` threads taking messages from one queue; every message the engine publishes
    is put back 2-3 times. Stops when ``done()`` holds (checked when the queue is idle)."""

    def __init__(self, engine: DagEngine, publisher: InMemoryPublisher, seed: int = 7) -> None:
        self.engine = engine
        self.publisher = publisher
        self.rng = random.Random(seed)
        self.inbox: queue.Queue[RunTask] = queue.Queue()
        self.lock = threading.Lock()
        self.errors: list[BaseException] = []
        self.deliveries = 0
        self.outcomes: Counter[str] = Counter()

    def feed(self) -> None:
        with self.lock:
            messages = self.publisher.drain(EVENTS_TOPIC)
            copies = [m for m in messages for _ in range(self.rng.choice((2, 3)))]
            self.rng.shuffle(copies)
        for message in copies:
            self.inbox.put(as_run_task(message))

    def run(self, count: int, done: Callable[[], bool], timeout_s: float = 120) -> None:
        stop = threading.Event()
        deadline = time.monotonic() + timeout_s

        def work() -> None:
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    msg = self.inbox.get(timeout=0.05)
                except queue.Empty:
                    self.feed()
                    continue
                try:
                    outcome = self.engine.run_task(msg)
                    with self.lock:
                        self.deliveries += 1
                        self.outcomes[outcome.value] += 1
                except BaseException as exc:
                    self.errors.append(exc)
                    stop.set()
                self.feed()

        threads = [threading.Thread(target=work) for _ in range(count)]
        self.feed()
        for t in threads:
            t.start()
        while not stop.is_set() and time.monotonic() < deadline:
            if self.inbox.empty() and done():
                break
            time.sleep(0.02)  # the watcher's poll of done(); the workers never wait on it
        stop.set()
        for t in threads:
            t.join(10)
        if self.errors:
            raise self.errors[0]
        assert done(), "the queue did not drain before the deadline"


def max_overlap(intervals: Iterable[tuple[Any, Any]]) -> int:
    """The most intervals [start, end) open at one moment (an end at t closes before a start
    at t opens)."""
    events = sorted(
        [(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
        key=lambda e: (e[0], e[1]),
    )
    most = open_now = 0
    for _, step in events:
        open_now += step
        most = max(most, open_now)
    return most


def attempt_intervals(db: Engine, pool: str) -> list[tuple[datetime, datetime]]:
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT a.started_at, coalesce(a.finished_at, 'infinity') FROM task_attempts a "
                "JOIN task_log tl USING (log_id) WHERE tl.pool = :pool"
            ),
            {"pool": pool},
        ).all()
    return [(r[0], r[1]) for r in rows]


def call(function: str, **kwargs: Any) -> str:
    return json.dumps({"callable": f"{HARNESS}:{function}", "kwargs": kwargs})
