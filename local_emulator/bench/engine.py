"""Engine throughput without transport: run_task completions per second of a batch of
independent root tasks, shared by N worker processes, each with its own dagrelay Engine and
SQLAlchemy engine, publishing into an InMemoryPublisher."""

from __future__ import annotations

import multiprocessing
import queue
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

from sqlalchemy import Engine, text

from dagrelay.config import load_settings
from dagrelay.engine.core import Engine as DagEngine
from dagrelay.engine.core import RunOutcome
from dagrelay.handlers.registry import default_registry
from dagrelay.local.processes import StackError
from dagrelay.messages import RunTask, StartBatch
from dagrelay.store.db import create_db_engine
from dagrelay.store.outbox import InMemoryPublisher
from local_emulator.bench.db import INDEPENDENT, insert_pipeline, scalar

EVENTS_TOPIC = "dagrelay-events"
BATCH = "b1"
WARMUP_PER_WORKER = 5  # completions each worker runs before the clock starts
READY_TIMEOUT_S = 90.0
RUN_TIMEOUT_S = 180.0


class BenchError(StackError):
    """A benchmark did not do what it measures (wrong outcome, missing rows)."""


def db_engine(url: str) -> Engine:
    """The SQLAlchemy engine as the deployed function builds it (pool, pre-ping)."""
    return create_db_engine(load_settings(database_url=url))


def dag_engine(db: Engine, publisher: InMemoryPublisher, worker_id: str) -> DagEngine:
    default_registry.load_plugins([])
    return DagEngine(
        db, publisher, default_registry, events_topic=EVENTS_TOPIC, worker_id=worker_id
    )


def run_ok(engine: DagEngine, pipeline: str, task: str, batch: str = BATCH) -> None:
    outcome = engine.run_task(RunTask(batch, task, pipeline))
    if outcome != RunOutcome.SUCCESS:
        raise BenchError(f"run_task {pipeline}/{task}: {outcome}, expected SUCCESS")


# -- throughput ------------------------------------------------------------------------------


def throughput(url: str, tasks: int, workers: int, pool_slots: int | None = None) -> float:
    """Completions per second: ``tasks`` / wall time of the completion phase (first worker
    starting to last worker done), after every worker has connected and warmed up. With
    ``pool_slots``, every task is in one pool of that many slots (its claim takes the pool's
    row lock; with slots >= workers nothing ever waits)."""
    pipeline = f"tp{workers}w" + ("" if pool_slots is None else f"pool{pool_slots}")
    warm = WARMUP_PER_WORKER * workers
    db = db_engine(url)
    try:
        insert_pipeline(db, pipeline, warm + tasks, INDEPENDENT)
        if pool_slots is not None:
            _in_pool(db, pipeline, pool_slots)
        publisher = InMemoryPublisher()
        dag_engine(db, publisher, "bench-starter").start_batch(StartBatch(pipeline, BATCH))
        names = sorted(str(m.payload["task"]) for m in publisher.drain())
        shares = [(names[:warm][i::workers], names[warm:][i::workers]) for i in range(workers)]
        spans = _run_workers(url, pipeline, shares)
        done = scalar(
            db,
            "SELECT count(*) FROM task_log WHERE pipeline = :p AND batch_id = :b "
            "AND status = 'SUCCESS'",
            p=pipeline,
            b=BATCH,
        )
    finally:
        db.dispose()
    if done != warm + tasks:
        raise BenchError(f"{done} of {warm + tasks} tasks succeeded")
    return tasks / (max(end for _, end in spans) - min(start for start, _ in spans))


def _in_pool(db: Engine, pipeline: str, slots: int) -> None:
    with db.begin() as conn:
        conn.execute(
            text("INSERT INTO pools (name, slots) VALUES (:p, :s)"), {"p": pipeline, "s": slots}
        )
        conn.execute(text("UPDATE tasks SET pool = :p WHERE pipeline = :p"), {"p": pipeline})


@dataclass(frozen=True)
class WorkerJob:
    url: str
    pipeline: str
    warm: list[str]  # run before the start signal
    share: list[str]  # the measured completions
    n: int


def _run_workers(
    url: str, pipeline: str, shares: Sequence[tuple[list[str], list[str]]]
) -> list[tuple[float, float]]:
    ctx = multiprocessing.get_context("spawn")  # clean processes: no inherited connections
    results: Queue[tuple[str, int, Any]] = ctx.Queue()
    go = ctx.Event()
    procs = [
        ctx.Process(
            target=_worker,
            args=(WorkerJob(url, pipeline, warm, share, n), go, results),
            daemon=True,
        )
        for n, (warm, share) in enumerate(shares)
    ]
    for proc in procs:
        proc.start()
    try:
        _collect(results, procs, "ready", READY_TIMEOUT_S)
        go.set()
        return _collect(results, procs, "done", RUN_TIMEOUT_S)
    finally:
        go.set()
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=10)


def _collect(
    results: Queue[tuple[str, int, Any]],
    procs: Sequence[BaseProcess],
    kind: str,
    timeout_s: float,
) -> list[Any]:
    """One ``kind`` report from every worker; fails fast if a worker reports an error or dies
    without a word (e.g. at import), and after ``timeout_s``."""
    values: dict[int, Any] = {}
    deadline = time.monotonic() + timeout_s
    while len(values) < len(procs):
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout_s:.0f}s waiting for workers ({kind})")
        try:
            got, n, value = results.get(timeout=0.5)
        except queue.Empty:
            dead = [p.name for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise BenchError(f"worker process(es) {dead} died") from None
            continue
        if got != kind:
            raise BenchError(f"worker {n} failed:\n{value}")
        values[n] = value
    return [values[n] for n in sorted(values)]


def _worker(job: WorkerJob, go: Event, results: Queue[tuple[str, int, Any]]) -> None:
    """One worker process; any failure is reported to the parent, which raises it."""
    try:
        _work(job, go, results)
    except Exception:  # noqa: BLE001 - reported to the parent, which raises
        results.put(("error", job.n, traceback.format_exc()))


def _work(job: WorkerJob, go: Event, results: Queue[tuple[str, int, Any]]) -> None:
    """Warm up, wait for the start signal, complete the share, report (start, end)."""
    db = db_engine(job.url)
    try:
        engine = dag_engine(db, InMemoryPublisher(), f"bench-worker-{job.n}")
        for task in job.warm:
            run_ok(engine, job.pipeline, task)
        results.put(("ready", job.n, None))
        if not go.wait(READY_TIMEOUT_S):
            raise BenchError("the start signal never came")
        started = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes
        for task in job.share:
            run_ok(engine, job.pipeline, task)
        results.put(("done", job.n, (started, time.monotonic())))
    finally:
        db.dispose()
