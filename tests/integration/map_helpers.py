"""Handlers and drivers for the mapped-task tests (tests/integration/test_map.py) and the map
bench: python.call functions, and a pool of worker threads delivering every message twice."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, text

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.handlers.registry import HandlerContext
from dagrelay.messages import RunTask
from dagrelay.store.outbox import InMemoryPublisher
from tests.integration.helpers import EVENTS_TOPIC, as_run_task

MAP = "tests.integration.map_helpers"

_lock = threading.Lock()
RUNS: Counter[tuple[str, str, int | None]] = Counter()  # (batch, task, map_index) -> runs
CALLS: Counter[tuple[str, str, int | None]] = Counter()  # handler calls, failed ones too
SEEN: list[Any] = []  # what the join saw


def runs_by_index(task: str) -> dict[int, int]:
    """{map_index: runs} of a mapped task's instances; every run of one carries its index."""
    runs = {key[2]: n for key, n in RUNS.items() if key[1] == task}
    assert None not in runs, f"{task} ran without a map index"
    return {index: n for index, n in runs.items() if index is not None}


def make_items(count: int, key: str = "items") -> dict[str, Any]:
    return {key: list(range(count))}


def make_objects(count: int) -> dict[str, Any]:
    return {"items": [{"n": i, "name": f"row-{i}"} for i in range(count)]}


def reference(uri: str) -> dict[str, Any]:
    return {"items": uri}


def square(
    context: HandlerContext, x: Any, fail: list[int] | None = None, flaky: list[int] | None = None
) -> dict[str, Any]:
    """The item's square; items in ``fail`` always fail, items in ``flaky`` fail once."""
    key = (context.batch_id, context.task, context.map_index)
    with _lock:
        CALLS[key] += 1
        calls = CALLS[key]
    if x in (fail or []) or (x in (flaky or []) and calls == 1):
        raise RuntimeError(f"item {x} failed (call {calls})")
    with _lock:
        RUNS[key] += 1
    return {"x": x, "y": x * x, "index": context.map_index, "item": context.item}


ACTIVE = [0, 0]  # tracked_square: instances running now, the most seen at once


def tracked_square(context: HandlerContext, x: Any) -> dict[str, Any]:
    """square, counting how many instances run at the same moment."""
    with _lock:
        ACTIVE[0] += 1
        ACTIVE[1] = max(ACTIVE[1], ACTIVE[0])
    try:
        time.sleep(0.005)  # the work: long enough for the workers' claims to overlap
        return square(context, x)
    finally:
        with _lock:
            ACTIVE[0] -= 1


def join(context: HandlerContext, over: str) -> dict[str, Any]:
    with _lock:
        RUNS[(context.batch_id, context.task, None)] += 1
        SEEN.append(context.parent_outputs.get(over))
    return {"count": len(context.parent_outputs.get(over) or [])}


def params(function: str, **kwargs: Any) -> str:
    return json.dumps({"callable": f"{MAP}:{function}", "kwargs": kwargs})


def set_map(db: Engine, pipeline: str, task: str, spec: dict[str, Any], **columns: Any) -> None:
    sets = "".join(f", {c} = :{c}" for c in columns)
    with db.begin() as conn:
        conn.execute(
            text(
                f"UPDATE tasks SET map = CAST(:m AS jsonb){sets} WHERE pipeline = :p AND name = :t"
            ),
            {"m": json.dumps(spec), "p": pipeline, "t": task, **columns},
        )


def run_workers(
    engine: DagEngine,
    publisher: InMemoryPublisher,
    done: Callable[[], bool],
    *,
    workers: int = 4,
    copies: int = 2,
    timeout_s: float = 300,
) -> int:
    """``workers`` threads take run_task messages (each delivered ``copies`` times) from one
    queue until ``done()``; returns the deliveries."""
    pending: queue.Queue[RunTask] = queue.Queue()
    errors: list[BaseException] = []
    delivered = Counter[str]()

    def feed() -> None:
        for message in publisher.drain(EVENTS_TOPIC):
            for _ in range(copies):
                pending.put(as_run_task(message))

    def work(name: str) -> None:
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                feed()
                try:
                    msg = pending.get(timeout=0.05)
                except queue.Empty:
                    if done():
                        return
                    continue
                engine.run_task(msg)
                delivered[name] += 1
            errors.append(AssertionError("the batch did not finish in time"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s + 10)
    if errors:
        raise errors[0]
    return sum(delivered.values())
