"""Parents finishing at the same moment from several workers against the real database: each
child is created exactly once, with exactly one run_task message, and nothing deadlocks."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import pytest
from sqlalchemy import Engine

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.engine.core import RunOutcome
from dagrelay.messages import RunTask, StartBatch
from dagrelay.store.outbox import InMemoryPublisher
from tests.integration.helpers import as_run_task, batch_status, drive, run_together, scalar

pytestmark = [pytest.mark.integration, pytest.mark.long_pole(20)]

InsertPipeline = Callable[..., dict[str, int]]
WORKERS = 8
REPETITIONS = 20


def complete_concurrently(engine: DagEngine, messages: list[RunTask]) -> list[RunOutcome]:
    """Run the messages from WORKERS threads (each with its own pooled connection), all
    released together."""

    def run(share: list[RunTask]) -> list[RunOutcome]:
        return [engine.run_task(m) for m in share]

    results = run_together([partial(run, messages[i::WORKERS]) for i in range(WORKERS)])
    return [outcome for share in results for outcome in share]


def child_counts(db: Engine, batch_id: str, child: str) -> tuple[int, int]:
    rows = scalar(
        db,
        "SELECT count(*) FROM task_log tl JOIN tasks t USING (task_id) "
        "WHERE tl.batch_id = :b AND t.name = :c",
        b=batch_id,
        c=child,
    )
    messages = scalar(
        db,
        "SELECT count(*) FROM outbox WHERE payload->>'batch_id' = :b AND payload->>'task' = :c",
        b=batch_id,
        c=child,
    )
    return rows, messages


def test_200_parents_one_child(
    engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline, db: Engine
) -> None:
    parents = [f"p{i:03d}" for i in range(200)]
    insert_pipeline("fan", {"child": parents})
    timings = []
    for rep in range(REPETITIONS):
        batch = f"b{rep}"
        engine.start_batch(StartBatch("fan", batch))
        roots = [as_run_task(m) for m in publisher.drain()]
        assert len(roots) == 200

        started = time.perf_counter()
        outcomes = complete_concurrently(engine, roots)
        timings.append(time.perf_counter() - started)

        assert outcomes == [RunOutcome.SUCCESS] * 200
        assert child_counts(db, batch, "child") == (1, 1)
        assert [m.payload["task"] for m in publisher.sent] == ["child"]
        assert (
            scalar(
                db,
                "SELECT (parents, succeeded, failed, skipped)::text FROM task_fanin "
                "WHERE batch_id = :b",
                b=batch,
            )
            == "(200,200,0,0)"
        )
        drive(engine, publisher)
        assert batch_status(db, "fan", batch) == "SUCCESS"
    print(
        f"\n200 parents from {WORKERS} workers: median {sorted(timings)[len(timings) // 2]:.3f}s,"
        f" max {max(timings):.3f}s per batch"
    )


def test_50_parents_sharing_5_children(
    engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline, db: Engine
) -> None:
    parents = [f"p{i:02d}" for i in range(50)]
    children = [f"c{i}" for i in range(5)]
    insert_pipeline("share", dict.fromkeys(children, parents))
    for rep in range(5):
        batch = f"b{rep}"
        engine.start_batch(StartBatch("share", batch))
        outcomes = complete_concurrently(engine, [as_run_task(m) for m in publisher.drain()])

        assert outcomes == [RunOutcome.SUCCESS] * 50  # a deadlock would have raised
        assert sorted(m.payload["task"] for m in publisher.sent) == children
        for child in children:
            assert child_counts(db, batch, child) == (1, 1)
        assert (
            scalar(
                db,
                "SELECT count(*) FROM task_fanin WHERE batch_id = :b AND succeeded = 50",
                b=batch,
            )
            == 5
        )
        drive(engine, publisher)
        assert batch_status(db, "share", batch) == "SUCCESS"
