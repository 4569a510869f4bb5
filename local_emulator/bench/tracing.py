"""The cost of tracing on the hot path: a chain of run_task hops through the router (parse, claim,
handler, conclude, the children's messages through the relay), tracing off and on, interleaved
in one sitting, one process. Prints medians per hop, the ratio on/off and the SQL statements per
hop (``python -m local_emulator.bench.tracing [--tasks 20] [--rounds 15] [--modes off,on]``).
``--modes off`` runs on a checkout without tracing too (``PYTHONPATH=<old>/functions``): the
before/after comparison of the hot path with tracing off.

"On" is the production setup without the network: an SDK provider sampling every trace, its
spans through a BatchSpanProcessor into an exporter that drops them (Cloud Trace's exporter
would send them from the processor's thread, off the hop's path).
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from sqlalchemy import Engine, event

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.handlers.registry import default_registry
from dagrelay.messages import Envelope, encode
from dagrelay.router.dispatch import Router
from dagrelay.states import Action
from dagrelay.store.outbox import InMemoryPublisher, OutgoingMessage
from local_emulator.bench.db import CHAIN, insert_pipeline, throwaway_database
from local_emulator.bench.engine import EVENTS_TOPIC, BenchError, db_engine

try:
    from dagrelay import tracing
except ImportError:  # a checkout from before tracing: --modes off only
    tracing = None  # type: ignore[assignment]

PIPELINE = "traced"


class _Dropped(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _envelope(message: OutgoingMessage) -> Envelope:
    data = base64.b64encode(message.data()).decode()
    return Envelope(data, dict(message.attributes), f"m-{message.outbox_id}")


def _start(batch_id: str) -> Envelope:
    payload = {"action": Action.START_BATCH.value, "pipeline": PIPELINE, "batch_id": batch_id}
    return Envelope(base64.b64encode(encode(payload)).decode(), {}, f"start-{batch_id}")


class _Statements:
    def __init__(self, db: Engine) -> None:
        self.count = 0
        event.listen(db, "before_cursor_execute", self._seen)

    def _seen(self, *_: Any) -> None:
        self.count += 1


def _batch(
    router: Router, publisher: InMemoryPublisher, statements: _Statements, batch_id: str
) -> tuple[list[tuple[float, float]], int]:
    """One batch of the chain: each run_task hop's (wall, this process's CPU) seconds, and the
    statements of all hops. The CPU time is what tracing adds; the wall time also waits for
    the database, shared with whatever else runs on the machine."""
    router.handle(_start(batch_id))
    hops: list[tuple[float, float]] = []
    before = statements.count
    while messages := publisher.drain(EVENTS_TOPIC):
        for message in messages:
            wall, cpu = time.perf_counter(), time.process_time()
            router.handle(_envelope(message))
            hops.append((time.perf_counter() - wall, time.process_time() - cpu))
    return hops, statements.count - before


def measure(tasks: int, rounds: int, modes: Sequence[str] = ("off", "on")) -> dict[str, Any]:
    with throwaway_database("tracing") as url:
        db = db_engine(url)
        try:
            insert_pipeline(db, PIPELINE, tasks, CHAIN)
            publisher = InMemoryPublisher()
            default_registry.load_plugins([])
            engine = DagEngine(
                db, publisher, default_registry, events_topic=EVENTS_TOPIC, worker_id="bench"
            )
            router = Router(engine, db, engine.clock, dead_letter_topic="dead")
            statements = _Statements(db)
            provider = TracerProvider()
            provider.add_span_processor(BatchSpanProcessor(_Dropped()))
            hops: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
            per_hop: dict[str, list[float]] = {m: [] for m in modes}
            _batch(router, publisher, statements, "warm-up")
            for n in range(rounds):
                for mode in modes if n % 2 == 0 else modes[::-1]:
                    if mode == "on":
                        tracing.install(provider, project_id="bench")
                    try:
                        times, count = _batch(router, publisher, statements, f"{mode}-{n}")
                    finally:
                        if tracing is not None:
                            tracing.uninstall()
                    if len(times) != tasks:
                        raise BenchError(f"{len(times)} hops of {tasks} tasks")
                    hops[mode] += times
                    per_hop[mode].append(count / tasks)
            provider.shutdown()
        finally:
            db.dispose()
    wall = {mode: statistics.median(w for w, _ in times) for mode, times in hops.items()}
    cpu = {mode: statistics.median(c for _, c in times) for mode, times in hops.items()}
    result: dict[str, Any] = {
        "tasks_per_batch": tasks,
        "batches_per_mode": rounds,
        "hop_median_ms": {mode: round(m * 1000, 3) for mode, m in wall.items()},
        "hop_cpu_median_ms": {mode: round(m * 1000, 3) for mode, m in cpu.items()},
        "statements_per_hop": {
            mode: round(statistics.median(counts), 2) for mode, counts in per_hop.items()
        },
    }
    if set(wall) == {"off", "on"}:
        result["ratio_on_off"] = round(wall["on"] / wall["off"], 3)
        result["cpu_ratio_on_off"] = round(cpu["on"] / cpu["off"], 3)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20, help="tasks in the chain")
    parser.add_argument("--rounds", type=int, default=15, help="batches per mode")
    parser.add_argument("--modes", default="off,on", help="off,on (or off alone)")
    args = parser.parse_args(argv)
    modes = tuple(args.modes.split(","))
    sys.stdout.write(json.dumps(measure(args.tasks, args.rounds, modes), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
