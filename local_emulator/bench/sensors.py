"""1,000 waiting sensors: what they cost between pokes. One batch of N signal sensors (each its
own key) is started and brought to waiting; then the clock (injected) moves through the poke
interval in sweeps, and we count what the waiting costs — rows, database connections held,
messages published (each one a router request) — before and at the next poke, and the time
from a signal to its sensor's end. In-process against PostgreSQL with an InMemoryPublisher
(every published message counted as the router request it would be).

Runnable alone: ``python -m local_emulator.bench.sensors [N]``."""

from __future__ import annotations

import json
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, text

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.engine.sweeper import Sweeper
from dagrelay.handlers.registry import default_registry
from dagrelay.messages import PollTask, RunTask, Signal, StartBatch
from dagrelay.store.outbox import InMemoryPublisher
from local_emulator.bench.db import scalar, throwaway_database
from local_emulator.bench.engine import EVENTS_TOPIC, BenchError, db_engine

SENSORS = 1000
POKE_S = 300
SWEEPS_BETWEEN_POKES = 10  # the sweep runs every minute in GCP; 10 here, 29 s apart
PIPELINE, BATCH = "sense", "b1"


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def insert_sensors(db: Engine, count: int) -> None:
    params = {"key": "done.{n}", "poke_interval_s": POKE_S, "timeout_s": 86400}
    with db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tasks (name, pipeline, handler, params) "
                "SELECT 's' || lpad(n::text, 5, '0'), :p, 'sensor.signal', "
                "jsonb_set(CAST(:params AS jsonb), '{key}', to_jsonb('done.' || n)) "
                "FROM generate_series(1, :count) n"
            ),
            {"p": PIPELINE, "params": json.dumps(params), "count": count},
        )


def deliver(engine: DagEngine, publisher: InMemoryPublisher) -> list[float]:
    """Deliver every published message (run_task, poll_task) until none is left; the seconds
    each delivery took."""
    took: list[float] = []
    while messages := publisher.drain(EVENTS_TOPIC):
        for m in messages:
            p = m.payload
            started = time.perf_counter()
            if p["action"] == "run_task":
                engine.run_task(RunTask(p["batch_id"], p["task"], p["pipeline"]))
            else:
                engine.poll_task(
                    PollTask(p["batch_id"], p["task"], p["attempt"], p["pipeline"], p["poll_at"])
                )
            took.append(time.perf_counter() - started)
    return took


def connections(db: Engine) -> int:
    """Sessions on the database other than the one asking (the engine's pool, idle or not)."""
    return int(
        scalar(
            db,
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
    )


def measure(url: str, count: int = SENSORS) -> dict[str, Any]:
    db = db_engine(url)
    try:
        default_registry.load_plugins([])
        clock, publisher = Clock(), InMemoryPublisher()
        engine = DagEngine(
            db, publisher, default_registry, events_topic=EVENTS_TOPIC, worker_id="b", clock=clock
        )
        insert_sensors(db, count)
        engine.start_batch(StartBatch(PIPELINE, BATCH))
        deliver(engine, publisher)  # claim, defer, first poll, defer: all waiting now
        waiting = scalar(db, "SELECT count(*) FROM task_log WHERE job ? 'waiting_for'")
        if waiting != count:
            raise BenchError(f"{waiting} sensors waiting, expected {count}")
        sweeper = Sweeper(engine)
        requests = sweeps_held = 0
        held_connections: list[int] = []
        for _ in range(SWEEPS_BETWEEN_POKES - 1):
            clock.now += timedelta(seconds=POKE_S / SWEEPS_BETWEEN_POKES)
            sweeper.sweep()
            requests += len(publisher.drain(EVENTS_TOPIC))
            held_connections.append(db.pool.checkedout())  # type: ignore[attr-defined]
            sweeps_held += 1
        rows = {
            "task_log": scalar(db, "SELECT count(*) FROM task_log"),
            "outbox_held": scalar(db, "SELECT count(*) FROM outbox WHERE published_at IS NULL"),
        }
        between = {"sweeps": sweeps_held, "router_requests": requests}
        idle_sessions = connections(db)
        clock.now += timedelta(seconds=POKE_S / SWEEPS_BETWEEN_POKES + 1)
        poke_polls: list[float] = []
        poke_sweeps = 0
        while True:  # each sweep's relay publishes up to its limit
            sweeper.sweep()
            got = deliver(engine, publisher)
            if not got:
                break
            poke_sweeps += 1
            poke_polls += got
        clock.now += timedelta(seconds=1)
        started = time.perf_counter()
        engine.signal(Signal(key="done.1"))
        deliver(engine, publisher)
        signal_ms = (time.perf_counter() - started) * 1000
        done = scalar(db, "SELECT count(*) FROM task_log WHERE status = 'SUCCESS'")
        if done != 1:
            raise BenchError(f"{done} sensors succeeded after one signal, expected 1")
        return {
            "sensors": count,
            "rows_while_waiting": rows,
            "between_pokes": between
            | {"connections_checked_out_max": max(held_connections), "db_sessions": idle_sessions},
            "at_the_poke": {
                "router_requests": len(poke_polls),
                "sweeps": poke_sweeps,
                "poll_median_ms": round(statistics.median(poke_polls) * 1000, 2),
            },
            "signal_to_success_ms": round(signal_ms, 1),
        }
    finally:
        db.dispose()


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else SENSORS
    with throwaway_database("sensors") as url:
        print(json.dumps(measure(url, count), indent=2))


if __name__ == "__main__":
    main()
