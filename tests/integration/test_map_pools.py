"""A mapped task in a pool: each instance is claimed under the pool's slots by its map_index,
so a map over many items never runs more of them at once than the pool allows."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import Engine, text

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.messages import StartBatch
from dagrelay.store.outbox import InMemoryPublisher
from tests.integration import map_helpers as mh
from tests.integration.helpers import batch_status

pytestmark = pytest.mark.integration

InsertPipeline = Callable[..., dict[str, int]]
SLOTS = 3
ITEMS = 40


def tracked_map(insert_pipeline: InsertPipeline, items: int) -> None:
    """src -> each (tracked_square, to be mapped over src.items) -> join; counters reset."""
    mh.RUNS.clear()
    mh.ACTIVE[:] = [0, 0]
    insert_pipeline(
        "p",
        {"src": [], "each": ["src"], "join": ["each"]},
        handlers=dict.fromkeys(("src", "each", "join"), "python.call"),
        params={
            "src": mh.params("make_items", count=items),
            "each": mh.params("tracked_square", x="{item}"),
            "join": mh.params("join", over="each"),
        },
    )


def test_a_mapped_task_in_a_pool_runs_each_item_once_within_its_slots(
    db: Engine, engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline
) -> None:
    tracked_map(insert_pipeline, ITEMS)
    with db.begin() as conn:
        conn.execute(text("INSERT INTO pools (name, slots) VALUES ('narrow', :n)"), {"n": SLOTS})
    mh.set_map(db, "p", "each", {"over": "src.items"}, pool="narrow")
    engine.start_batch(StartBatch("p", "b1"))

    mh.run_workers(
        engine, publisher, lambda: batch_status(db, "p", "b1") != "RUNNING", workers=4, copies=2
    )

    assert batch_status(db, "p", "b1") == "SUCCESS"
    each = mh.runs_by_index("each")
    assert sorted(each) == list(range(ITEMS)), "every item ran"
    assert set(each.values()) == {1}, "no item ran twice"
    most = mh.ACTIVE[1]
    assert 1 <= most <= SLOTS, f"{most} instances ran at once in a pool of {SLOTS}"
    with db.connect() as conn:
        held = conn.execute(
            text(
                "SELECT count(*) FROM task_log WHERE map_index >= 0 AND limited AND pool = 'narrow'"
            )
        ).scalar_one()
    assert held == ITEMS, "every instance held a slot of the pool"


PARALLEL = 2
PARALLEL_ITEMS = 30


def test_a_map_with_max_parallel_runs_each_item_once_and_at_most_n_at_once(
    db: Engine, engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline
) -> None:
    tracked_map(insert_pipeline, PARALLEL_ITEMS)
    mh.set_map(db, "p", "each", {"over": "src.items", "max_parallel": PARALLEL})
    engine.start_batch(StartBatch("p", "b1"))

    mh.run_workers(
        engine, publisher, lambda: batch_status(db, "p", "b1") != "RUNNING", workers=4, copies=2
    )

    assert batch_status(db, "p", "b1") == "SUCCESS"
    each = mh.runs_by_index("each")
    assert sorted(each) == list(range(PARALLEL_ITEMS)), "every item ran"
    assert set(each.values()) == {1}, "no item ran twice"
    most = mh.ACTIVE[1]
    assert 1 <= most <= PARALLEL, f"{most} instances ran at once with max_parallel {PARALLEL}"
    assert mh.RUNS[("b1", "join", None)] == 1, "the join ran once"
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE limited), count(*) FILTER (WHERE pool IS NULL) "
                "FROM task_log WHERE map_index >= 0"
            )
        ).one()
    assert tuple(rows) == (PARALLEL_ITEMS, PARALLEL_ITEMS), "claimed in the group, in no pool"
