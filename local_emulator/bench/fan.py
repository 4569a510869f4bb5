"""Fan-in / fan-out cost: the completion of the last parent of a child with P parents (fan-in),
or of a parent with C children (fan-out), timed and its SQL statements counted, in-process against
PostgreSQL with an InMemoryPublisher; and, on the same state, a naive loop of per-parent queries
(the seed's algorithm) for comparison."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, text

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.messages import StartBatch
from dagrelay.store.db import StatementCounter
from dagrelay.store.outbox import InMemoryPublisher
from local_emulator.bench.db import FAN_IN, FAN_OUT, insert_pipeline, median, scalar, task_name
from local_emulator.bench.engine import BATCH, BenchError, dag_engine, db_engine, run_ok

# -- fan-in / fan-out ------------------------------------------------------------------------


@dataclass(frozen=True)
class FanCase:
    """A fan-in pipeline fi*: parents 1..size -> child size+1; or a fan-out pipeline fo*:
    parent 1 -> children 2..size+1. Measured: the completion of ``last_parent`` in ``batch``."""

    pipeline: str
    last_parent: int  # task_id
    last_parent_name: str
    children: list[int]  # task_ids its completion releases
    batch: str = ""


def new_case(db: Engine, pipeline: str, size: int) -> FanCase:
    fan_in = pipeline.startswith("fi")
    # The guard trigger is skipped for these generated, acyclic shapes: at ~0.5 ms an edge it
    # would dominate the set-up (the wide batch's insert is timed with it on).
    ids = insert_pipeline(db, pipeline, size + 1, FAN_IN if fan_in else FAN_OUT, guard=False)
    last = size if fan_in else 1
    children = [size + 1] if fan_in else list(range(2, size + 2))
    return FanCase(pipeline, ids[last], task_name(pipeline, last), [ids[n] for n in children])


def start(
    db: Engine, engine: DagEngine, publisher: InMemoryPublisher, case: FanCase, batch: str
) -> FanCase:
    """Start ``batch`` and put it in the state "every parent but the last has succeeded"."""
    case = replace(case, batch=batch)
    engine.start_batch(StartBatch(case.pipeline, batch))
    publisher.drain()
    with db.begin() as conn:
        conn.execute(
            text(
                "UPDATE task_log SET status = 'SUCCESS', attempt = 1, started_at = :now, "
                "finished_at = :now WHERE pipeline = :p AND batch_id = :b AND task_id <> :last"
            ),
            {"p": case.pipeline, "b": batch, "last": case.last_parent, "now": datetime.now(UTC)},
        )
        _reset(conn, case)
    return case


def _reset(conn: Connection, case: FanCase) -> None:
    """Back to "all parents but the last succeeded": the released children's rows go (with
    their outbox rows, by cascade), the last parent is NEW again, the counters are set."""
    params = {"b": case.batch, "last": case.last_parent, "children": case.children}
    conn.execute(
        text("DELETE FROM task_log WHERE batch_id = :b AND task_id = ANY(:children)"), params
    )
    conn.execute(
        text(
            "DELETE FROM task_attempts WHERE log_id = "
            "(SELECT log_id FROM task_log WHERE batch_id = :b AND task_id = :last)"
        ),
        params,
    )
    conn.execute(
        text(
            "UPDATE task_log SET status = 'NEW', attempt = 0, started_at = NULL, "
            "finished_at = NULL, lease_expires_at = NULL, output = NULL, error = NULL "
            "WHERE batch_id = :b AND task_id = :last"
        ),
        params,
    )
    conn.execute(
        text(
            "UPDATE task_fanin SET succeeded = parents - 1, failed = 0, skipped = 0 "
            "WHERE batch_id = :b AND task_id = ANY(:children)"
        ),
        params,
    )


def reset_fan(db: Engine, case: FanCase) -> None:
    with db.begin() as conn:
        _reset(conn, case)


def measure(db: Engine, work: Callable[[], None]) -> tuple[float, int]:
    """(seconds, SQL statements) of ``work``."""
    with StatementCounter().attached(db) as counter:
        started = time.perf_counter()
        work()
        elapsed = time.perf_counter() - started
    return elapsed, counter.count


def check_released(db: Engine, case: FanCase) -> None:
    created = scalar(
        db,
        "SELECT count(*) FROM task_log WHERE batch_id = :b AND task_id = ANY(:c) "
        "AND status = 'NEW'",
        b=case.batch,
        c=case.children,
    )
    if created != len(case.children):
        raise BenchError(f"{case.pipeline}: {created} of {len(case.children)} children created")


def ours(engine: DagEngine, publisher: InMemoryPublisher, case: FanCase) -> Callable[[], None]:
    def work() -> None:
        run_ok(engine, case.pipeline, case.last_parent_name, case.batch)
        if len(publisher.drain()) != len(case.children):
            raise BenchError(f"{case.pipeline}: not one run_task message per child")

    return work


def naive(db: Engine, case: FanCase) -> Callable[[], None]:
    """The seed's check_and_trigger_children: claim and finish the parent, then for each of
    its children read the child's parents and look up each parent's status one by one; when all
    succeeded, insert the child's task_log row and its message."""
    key = {"b": case.batch, "t": case.last_parent}

    def work() -> None:
        now = datetime.now(UTC)
        with db.begin() as conn:
            conn.execute(_NAIVE["claim"], {**key, "now": now})
        with db.begin() as conn:
            conn.execute(_NAIVE["finish"], {**key, "now": now})
            children = conn.execute(_NAIVE["children"], key).scalars().all()
            for child in children:
                parents = conn.execute(_NAIVE["parents"], {"c": child}).scalars().all()
                if all(
                    conn.execute(_NAIVE["status"], {"b": case.batch, "t": p}).scalar_one_or_none()
                    == "SUCCESS"
                    for p in parents
                ):
                    _naive_create(conn, case, child, now)

    return work


def _naive_create(conn: Connection, case: FanCase, child: int, now: datetime) -> None:
    key = {"p": case.pipeline, "b": case.batch, "now": now}
    log_id = conn.execute(_NAIVE["create"], {**key, "c": child}).scalar_one_or_none()
    if log_id is not None:
        conn.execute(_NAIVE["message"], {**key, "log_id": log_id})


_NAIVE = {
    "claim": text(
        "UPDATE task_log SET status = 'PROCESSING', attempt = attempt + 1, started_at = :now "
        "WHERE batch_id = :b AND task_id = :t AND status = 'NEW'"
    ),
    "finish": text(
        "UPDATE task_log SET status = 'SUCCESS', finished_at = :now "
        "WHERE batch_id = :b AND task_id = :t AND status = 'PROCESSING'"
    ),
    "children": text("SELECT child_task_id FROM task_dependencies WHERE parent_task_id = :t"),
    "parents": text("SELECT parent_task_id FROM task_dependencies WHERE child_task_id = :c"),
    "status": text("SELECT status::text FROM task_log WHERE batch_id = :b AND task_id = :t"),
    "create": text(
        "INSERT INTO task_log (pipeline, batch_id, task_id, status, created_at) "
        "VALUES (:p, :b, :c, 'NEW', :now) "
        "ON CONFLICT ON CONSTRAINT task_log_batch_task_key DO NOTHING "
        "RETURNING log_id"
    ),
    "message": text(
        "INSERT INTO outbox (topic, payload, attributes, created_at, available_at, log_id) "
        "SELECT 'dagrelay-events', jsonb_build_object('action', 'run_task', 'pipeline', "
        "CAST(:p AS text), 'batch_id', CAST(:b AS text), 'task', t.name), "
        '\'{"action": "run_task"}\', :now, :now, tl.log_id '
        "FROM task_log tl JOIN tasks t USING (task_id) WHERE tl.log_id = :log_id"
    ),
}


# -- the scaling runs ------------------------------------------------------------------------


@dataclass
class Cost:
    seconds: float  # median over the repetitions
    statements: int  # the most any repetition sent


def scaling(
    url: str, sizes: Sequence[int], reps: int, naive_reps: int
) -> dict[str, dict[int, Cost]]:
    """For each size: fan-in, ours and naive interleaved on the same state (reset between);
    fan-out, ours, each repetition on a fresh batch. At the largest size the slow ones (naive
    fan-in, fan-out) run once."""
    db = db_engine(url)
    publisher = InMemoryPublisher()
    engine = dag_engine(db, publisher, "bench-fan")
    out: dict[str, dict[int, Cost]] = {"fanin": {}, "naive": {}, "fanout": {}}
    try:
        warm = start(db, engine, publisher, new_case(db, "fi-warm", 10), "w1")  # caches, pool
        _repeat(db, warm, [ours(engine, publisher, warm), naive(db, warm)], [1, 1])
        for size in sizes:
            once = size == max(sizes)
            case = start(db, engine, publisher, new_case(db, f"fi{size}", size), BATCH)
            works = [ours(engine, publisher, case), naive(db, case)]
            counts = [reps, 1 if once else naive_reps]
            out["fanin"][size], out["naive"][size] = _repeat(db, case, works, counts)
            case = new_case(db, f"fo{size}", size)
            out["fanout"][size] = _fresh(db, engine, publisher, case, 1 if once else reps)
    finally:
        db.dispose()
    return out


def _fresh(
    db: Engine, engine: DagEngine, publisher: InMemoryPublisher, case: FanCase, reps: int
) -> Cost:
    """Each repetition on a batch of its own (undoing thousands of children costs more than
    starting again)."""
    times, statements = [], 0
    for rep in range(reps):
        started = start(db, engine, publisher, case, f"b{rep + 1}")
        elapsed, sent = measure(db, ours(engine, publisher, started))
        check_released(db, started)
        times.append(elapsed)
        statements = max(statements, sent)
    return Cost(median(times), statements)


def _repeat(
    db: Engine, case: FanCase, works: Sequence[Callable[[], None]], counts: Sequence[int]
) -> list[Cost]:
    """Run each work counts[i] times, interleaved, checking and resetting the state each time."""
    times: list[list[float]] = [[] for _ in works]
    statements = [0 for _ in works]
    for rep in range(max(counts)):
        for i, work in enumerate(works):
            if rep >= counts[i]:
                continue
            elapsed, sent = measure(db, work)
            check_released(db, case)
            reset_fan(db, case)
            times[i].append(elapsed)
            statements[i] = max(statements[i], sent)
    return [Cost(median(t), s) for t, s in zip(times, statements, strict=True)]
