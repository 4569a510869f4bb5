"""The completion that releases a child costs the same number of statements whether the child
has 1 parent or 200: one set-based statement, not a loop over parents (ARCHITECTURE.md,
"Invariants")."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable

import pytest
from sqlalchemy import Engine

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.engine.core import RunOutcome
from dagrelay.messages import StartBatch
from dagrelay.store.db import StatementCounter
from dagrelay.store.outbox import InMemoryPublisher
from dagrelay.store.queries import all_queries, query
from tests.integration.helpers import as_run_task, batch_status, call_params, statuses

pytestmark = pytest.mark.integration

InsertPipeline = Callable[..., dict[str, int]]


def query_names(db: Engine) -> dict[str, str]:
    """Each named query as the driver receives it (compiled for the dialect) -> its name."""
    return {str(query(name).compile(dialect=db.dialect)): name for name in all_query_names()}


def all_query_names() -> list[str]:
    return list(all_queries())


def count(db: Engine, work: Callable[[], object]) -> Counter[str]:
    names = query_names(db)
    with StatementCounter().attached(db) as counter:
        work()
    return Counter(names.get(s, s) for s in counter.statements)


def last_parent_completion(
    engine: DagEngine, publisher: InMemoryPublisher, db: Engine, parents: int
) -> tuple[Counter[str], Counter[str]]:
    engine.start_batch(StartBatch("p", "b1"))
    roots = [as_run_task(m) for m in publisher.drain()]
    assert len(roots) == parents
    for msg in roots[:-1]:
        assert engine.run_task(msg) == RunOutcome.SUCCESS
    publisher.drain()
    releasing = count(db, lambda: engine.run_task(roots[-1]))
    [child] = [as_run_task(m) for m in publisher.drain()]
    last = count(db, lambda: engine.run_task(child))
    return releasing, last


@pytest.fixture
def counts_by_parents(
    engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline, db: Engine
) -> Callable[[int], tuple[Counter[str], Counter[str]]]:
    def run(parents: int) -> tuple[Counter[str], Counter[str]]:
        insert_pipeline("p", {"child": [f"p{i:03d}" for i in range(parents)]})
        return last_parent_completion(engine, publisher, db, parents)

    return run


EXPECTED_RELEASE = {
    "claim_task": 1,
    "finish_attempt": 1,
    "advance_children": 1,
    "mark_published": 1,
}
EXPECTED_LAST_TASK = {
    "claim_task": 1,
    "finish_attempt": 1,
    "advance_children": 1,
    "finish_batch": 1,
}


@pytest.mark.parametrize("parents", [1, 200])
def test_statements_per_completion(
    counts_by_parents: Callable[[int], tuple[Counter[str], Counter[str]]], parents: int
) -> None:
    releasing, last = counts_by_parents(parents)
    print(f"\n{parents} parent(s): releasing completion {dict(releasing)}; child {dict(last)}")
    assert dict(releasing) == EXPECTED_RELEASE
    assert dict(last) == EXPECTED_LAST_TASK


EXPECTED_FAILED_ROOT = {
    "claim_task": 1,
    "finish_attempt": 1,
    "advance_children": 1,  # every level below is settled inside this one statement
    "mark_published": 1,  # the alert
    "finish_batch": 1,
}


@pytest.mark.parametrize("depth", [1, 12])
def test_a_failure_settles_every_level_below_in_one_statement(
    engine: DagEngine,
    publisher: InMemoryPublisher,
    insert_pipeline: InsertPipeline,
    db: Engine,
    depth: int,
) -> None:
    chain = [f"t{i:02d}" for i in range(depth + 1)]
    insert_pipeline(
        "p",
        {child: [parent] for parent, child in itertools.pairwise(chain)},
        handlers={chain[0]: "python.call"},
        params={chain[0]: call_params("flaky", fails=10**6)},
    )
    engine.start_batch(StartBatch("p", "b1"))
    [root] = [as_run_task(m) for m in publisher.drain()]

    failing = count(db, lambda: engine.run_task(root))

    assert dict(failing) == EXPECTED_FAILED_ROOT
    assert statuses(db, "b1") == {chain[0]: "ERROR"} | dict.fromkeys(chain[1:], "UPSTREAM_FAILED")
    assert batch_status(db, "p", "b1") == "FAILED"
