"""Mapped tasks: src -> each (mapped over src.items) -> join, with N items. Measured in-process
against PostgreSQL with an InMemoryPublisher (no transport): the SQL statements and the time of
the completion of src that creates the N instances and their messages, then the wall time of 4
worker threads running the N instances and the join (each message delivered once).

Runnable alone: ``python -m local_emulator.bench.maps [N ...]``."""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from typing import Any

from sqlalchemy import Engine, text

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.handlers.registry import HandlerContext, default_registry
from dagrelay.messages import RunTask, StartBatch
from dagrelay.store.db import StatementCounter
from dagrelay.store.outbox import InMemoryPublisher
from local_emulator.bench.db import scalar, throwaway_database
from local_emulator.bench.engine import BenchError, dag_engine, db_engine

SIZES = (1000, 10000)
WORKERS = 4
RUN_TIMEOUT_S = 600.0


def items(count: int) -> dict[str, Any]:
    """src's handler: the list to map over."""
    return {"items": list(range(count))}


def echo(item: int) -> dict[str, Any]:
    """each's handler."""
    return {"item": item}


def _items_handler(ctx: HandlerContext) -> dict[str, Any]:
    return items(int(ctx.params["count"]))


def _echo_handler(ctx: HandlerContext) -> dict[str, Any]:
    return echo(ctx.params["item"])


# The bench's own handlers (python.call runs only the deployment's modules, not local_emulator).
default_registry.register("bench.items", _items_handler)
default_registry.register("bench.echo", _echo_handler)


def insert_map_pipeline(db: Engine, pipeline: str, max_items: int) -> None:
    tasks = [
        ("src", "bench.items", {"count": "{count}"}, None),
        ("each", "bench.echo", {"item": "{item}"}, {"over": "src.items", "max_items": max_items}),
        ("join", "python.noop", {}, None),
    ]
    with db.begin() as conn:
        for name, handler, params, spec in tasks:
            conn.execute(
                text(
                    "INSERT INTO tasks (name, pipeline, handler, params, map) VALUES "
                    "(:n, :p, :h, CAST(:params AS jsonb), CAST(:m AS jsonb))"
                ),
                {
                    "n": name,
                    "p": pipeline,
                    "h": handler,
                    "params": json.dumps(params),
                    "m": json.dumps(spec) if spec else None,
                },
            )
        conn.execute(
            text(
                "INSERT INTO task_dependencies (child_task_id, parent_task_id) "
                "SELECT c.task_id, p.task_id FROM tasks c, tasks p "
                "WHERE c.pipeline = :p AND p.pipeline = :p "
                "AND (p.name, c.name) IN (('src', 'each'), ('each', 'join'))"
            ),
            {"p": pipeline},
        )


def one_size(db: Engine, count: int) -> dict[str, float | int]:
    pipeline, batch = f"map{count}", f"b{count}"
    insert_map_pipeline(db, pipeline, max(count, 1))
    publisher = InMemoryPublisher()
    engine = dag_engine(db, publisher, "bench-map")
    engine.start_batch(StartBatch(pipeline, batch, params={"count": count}))
    publisher.drain()
    with StatementCounter().attached(db) as counter:
        started = time.perf_counter()
        engine.run_task(RunTask(batch, "src", pipeline))
        create_s = time.perf_counter() - started
    messages = publisher.drain()
    if len(messages) != count:
        raise BenchError(f"{pipeline}: {len(messages)} run_task messages for {count} items")
    wall = _run(engine, publisher, [_as_run_task(m.payload) for m in messages], pipeline, batch)
    ok = scalar(
        db,
        "SELECT count(*) FROM task_log WHERE batch_id = :b AND status = 'SUCCESS'",
        b=batch,
    )
    if ok != count + 3:  # src, the group, the instances, join
        raise BenchError(f"{pipeline}: {ok} rows succeeded, expected {count + 3}")
    return {
        "create_statements": counter.count,
        "create_ms": round(create_s * 1000, 1),
        "run_4_workers_s": round(wall, 2),
    }


def _as_run_task(payload: Any) -> RunTask:
    return RunTask(
        payload["batch_id"], payload["task"], payload["pipeline"], payload.get("map_index")
    )


def _run(
    engine: DagEngine,
    publisher: InMemoryPublisher,
    first: list[RunTask],
    pipeline: str,
    batch: str,
) -> float:
    pending: queue.Queue[RunTask] = queue.Queue()
    for msg in first:
        pending.put(msg)
    errors: list[BaseException] = []
    deadline = time.monotonic() + RUN_TIMEOUT_S

    def finished() -> bool:
        status = scalar(
            engine.db,
            "SELECT status::text FROM batches WHERE pipeline = :p AND batch_id = :b",
            p=pipeline,
            b=batch,
        )
        return bool(status != "RUNNING")

    def work() -> None:
        try:
            while time.monotonic() < deadline:
                for m in publisher.drain():
                    if m.payload.get("action") == "run_task":
                        pending.put(_as_run_task(m.payload))
                try:
                    msg = pending.get(timeout=0.05)
                except queue.Empty:
                    if finished():
                        return
                    continue
                engine.run_task(msg)
            errors.append(BenchError(f"{pipeline}: not finished in {RUN_TIMEOUT_S} s"))
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(WORKERS)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - started


def measure(url: str, sizes: tuple[int, ...] = SIZES) -> dict[str, dict[str, float | int]]:
    db = db_engine(url)
    try:
        return {str(n): one_size(db, n) for n in sizes}
    finally:
        db.dispose()


def main() -> None:
    sizes = tuple(int(a) for a in sys.argv[1:]) or SIZES
    with throwaway_database("map") as url:
        print(json.dumps(measure(url, sizes), indent=2))


if __name__ == "__main__":
    main()
