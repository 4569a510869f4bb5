"""Cancel, resume and rerun composed with mapped tasks (issue 18, problems 1 and 2).

A cancel that lands while a mapped task runs leaves its group CANCELLED with some items done;
resume must run exactly what never ran — the remaining items, the group's one decision, and
everything below it — and the batch's end must say what happened. A rerun never undoes a cancel:
while a batch is CANCELLING, every rerun is refused, naming the batch's status."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import Engine, text

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.engine.core import RunOutcome
from dagrelay.errors import BadMessage, NonRetryableError
from dagrelay.handlers.registry import HandlerContext, HandlerRegistry
from dagrelay.messages import CancelBatch, Rerun, Resume, RunTask, StartBatch
from dagrelay.router.dispatch import Router
from dagrelay.store.outbox import InMemoryPublisher
from tests.conftest import FakeClock
from tests.integration.helpers import Gate, batch_status, drive, make_engine, scalar
from tests.integration.map_helpers import set_map
from tests.integration.test_reliability_cancel import envelope

pytestmark = pytest.mark.integration

DEAD_LETTER_TOPIC = "dagrelay-dead-letter"


class Handlers:
    """src lists ``count`` items; each squares its item (``gated`` blocks until released,
    items in ``failing`` fail for good); join records what it saw; slow blocks."""

    def __init__(self) -> None:
        self.count = 6
        self.gated: int | None = None
        self.failing: set[int] = set()
        self.gate = Gate()
        self.slow = Gate()
        self.gates: dict[int | None, Gate] = {}  # more instances held at once
        self.runs: Counter[tuple[str, int | None]] = Counter()
        self.seen: list[Any] = []
        self.registry = HandlerRegistry()
        self.registry.register("t.src", self.src)
        self.registry.register("t.each", self.each)
        self.registry.register("t.join", self.join)
        self.registry.register("t.slow", self.slow)

    def src(self, ctx: HandlerContext) -> dict[str, Any]:
        if self.gated == -1:
            self.gate(ctx)
        self.runs[(ctx.task, None)] += 1
        return {"items": list(range(self.count))}

    def each(self, ctx: HandlerContext) -> dict[str, Any]:
        if ctx.map_index is not None and ctx.map_index == self.gated:
            self.gate(ctx)
        if ctx.map_index in self.gates:
            self.gates[ctx.map_index](ctx)
        self.runs[(ctx.task, ctx.map_index)] += 1
        if ctx.item in self.failing:
            raise NonRetryableError(f"item {ctx.item} failed for good")
        return {"y": ctx.item * ctx.item}

    def join(self, ctx: HandlerContext) -> dict[str, Any]:
        self.runs[(ctx.task, None)] += 1
        self.seen.append(ctx.parent_outputs.get("each"))
        return {}


@pytest.fixture
def handlers() -> Handlers:
    return Handlers()


@pytest.fixture
def dag(
    db: Engine, publisher: InMemoryPublisher, clock: FakeClock, handlers: Handlers
) -> DagEngine:
    return make_engine(db, publisher, clock, registry=handlers.registry)


@pytest.fixture
def mapped(db: Engine, insert_pipeline: Any) -> None:
    """p: src -> each (mapped over src.items) -> join, and a root ``slow`` beside them."""
    insert_pipeline(
        "p",
        {"src": [], "each": ["src"], "join": ["each"], "slow": []},
        handlers={"src": "t.src", "each": "t.each", "join": "t.join", "slow": "t.slow"},
    )
    set_map(db, "p", "each", {"over": "src.items"})


def group_rows(db: Engine) -> dict[int, str]:
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT tl.map_index, tl.status::text FROM task_log tl "
                "JOIN tasks t USING (task_id) WHERE t.name = 'each' ORDER BY tl.map_index"
            )
        )
        return {r[0]: r[1] for r in rows}


def cancel_while(dag: DagEngine, publisher: InMemoryPublisher, gate: Gate, msg: RunTask) -> None:
    """Run ``msg`` in a thread; cancel the batch while its handler blocks; let it end."""
    running = threading.Thread(target=lambda: dag.run_task(msg))
    running.start()
    try:
        assert gate.entered.wait(10)
        assert dag.cancel_batch(CancelBatch("p", "b1")) is not None
    finally:
        gate.release.set()
        running.join(10)
    drive(dag, publisher)  # what was sent before the cancel: every delivery ignored


def run_slow_through(dag: DagEngine, handlers: Handlers) -> None:
    handlers.slow.release.set()
    assert dag.run_task(RunTask("b1", "slow", pipeline="p")) == RunOutcome.SUCCESS


@pytest.mark.usefixtures("mapped")
@pytest.mark.parametrize(
    ("count", "gated", "done_before"),
    [
        pytest.param(6, 2, [0, 1], id="items still NEW when cancelled"),
        pytest.param(3, 2, [0, 1], id="the last item running when cancelled"),
    ],
)
def test_resume_after_a_cancel_mid_map_runs_what_never_ran(
    dag: DagEngine,
    db: Engine,
    publisher: InMemoryPublisher,
    handlers: Handlers,
    count: int,
    gated: int,
    done_before: list[int],
) -> None:
    handlers.count, handlers.gated = count, gated
    dag.start_batch(StartBatch("p", "b1"))
    publisher.drain()
    run_slow_through(dag, handlers)
    assert dag.run_task(RunTask("b1", "src", pipeline="p")) == RunOutcome.SUCCESS
    publisher.drain()
    for index in done_before:
        assert dag.run_task(RunTask("b1", "each", pipeline="p", map_index=index)) == "SUCCESS"
    cancel_while(
        dag, publisher, handlers.gate, RunTask("b1", "each", pipeline="p", map_index=gated)
    )
    assert batch_status(db, "p", "b1") == "CANCELLED"
    assert group_rows(db)[-1] == "CANCELLED"

    dag.resume(Resume("p", "b1"))
    drive(dag, publisher)

    assert batch_status(db, "p", "b1") == "SUCCESS"
    assert group_rows(db) == {-1: "SUCCESS"} | dict.fromkeys(range(count), "SUCCESS")
    assert {i: handlers.runs[("each", i)] for i in range(count)} == dict.fromkeys(range(count), 1)
    assert handlers.runs[("join", None)] == 1, "the group decided its children once"
    assert [o["y"] for o in handlers.seen[0]] == [i * i for i in range(count)]
    # The resumed batch can be rerun like any finished one.
    assert dag.rerun(Rerun(batch_id="b1", task="each", pipeline="p", downstream=True)) > 0
    drive(dag, publisher)
    assert batch_status(db, "p", "b1") == "SUCCESS"
    assert handlers.runs[("join", None)] == 2


@pytest.mark.usefixtures("mapped")
def test_resume_maps_a_task_whose_parent_ended_while_cancelling(
    dag: DagEngine, db: Engine, publisher: InMemoryPublisher, handlers: Handlers
) -> None:
    handlers.count, handlers.gated = 4, -1  # src blocks
    dag.start_batch(StartBatch("p", "b1"))
    publisher.drain()
    run_slow_through(dag, handlers)
    cancel_while(dag, publisher, handlers.gate, RunTask("b1", "src", pipeline="p"))
    assert batch_status(db, "p", "b1") == "CANCELLED"

    dag.resume(Resume("p", "b1"))
    drive(dag, publisher)

    assert batch_status(db, "p", "b1") == "SUCCESS"
    assert group_rows(db) == {-1: "SUCCESS"} | dict.fromkeys(range(4), "SUCCESS")
    assert handlers.runs[("each", None)] == 0, "the group row never runs as a task"
    assert [o["y"] for o in handlers.seen[0]] == [0, 1, 4, 9]


@pytest.mark.usefixtures("mapped")
def test_a_resumed_map_with_a_failed_item_fails_the_batch(
    dag: DagEngine, db: Engine, publisher: InMemoryPublisher, handlers: Handlers
) -> None:
    handlers.count, handlers.gated, handlers.failing = 4, 1, {3}
    dag.start_batch(StartBatch("p", "b1"))
    publisher.drain()
    run_slow_through(dag, handlers)
    dag.run_task(RunTask("b1", "src", pipeline="p"))
    publisher.drain()
    cancel_while(dag, publisher, handlers.gate, RunTask("b1", "each", pipeline="p", map_index=1))
    dag.resume(Resume("p", "b1"))
    drive(dag, publisher)
    assert batch_status(db, "p", "b1") == "FAILED"
    assert group_rows(db)[-1] == "ERROR"
    assert handlers.runs[("join", None)] == 0


@pytest.mark.usefixtures("mapped")
@pytest.mark.parametrize(
    "rerun",
    [
        pytest.param({"task": "each", "failed_items": True, "downstream": True}, id="failed-items"),
        pytest.param({"task": "each"}, id="task"),
        pytest.param({"task": "src", "downstream": True}, id="downstream"),
    ],
)
def test_no_rerun_undoes_a_cancel(
    dag: DagEngine,
    db: Engine,
    clock: FakeClock,
    publisher: InMemoryPublisher,
    handlers: Handlers,
    rerun: dict[str, Any],
) -> None:
    handlers.count, handlers.failing = 3, {1}
    dag.start_batch(StartBatch("p", "b1"))
    publisher.drain()
    dag.run_task(RunTask("b1", "src", pipeline="p"))
    drive_map = [RunTask("b1", "each", pipeline="p", map_index=i) for i in range(3)]
    for msg in drive_map:
        dag.run_task(msg)
    assert group_rows(db)[-1] == "ERROR"
    publisher.drain()
    running = threading.Thread(target=lambda: dag.run_task(RunTask("b1", "slow", pipeline="p")))
    running.start()
    try:
        assert handlers.slow.entered.wait(10)
        dag.cancel_batch(CancelBatch("p", "b1"))
        assert batch_status(db, "p", "b1") == "CANCELLING"
        message = Rerun(batch_id="b1", pipeline="p", **rerun)
        with pytest.raises(BadMessage, match="CANCELLING"):
            dag.rerun(message)
        assert batch_status(db, "p", "b1") == "CANCELLING"
        router = Router(dag, db, clock, dead_letter_topic=DEAD_LETTER_TOPIC)
        payload = {"action": "rerun", "batch_id": "b1", "pipeline": "p", **rerun}
        assert router.handle(envelope(payload, "m1")) == "rejected"  # acknowledged
        reason = scalar(db, "SELECT reason FROM rejected_messages")
        assert "CANCELLING" in reason
        assert batch_status(db, "p", "b1") == "CANCELLING"
        assert group_rows(db)[-1] == "ERROR", "nothing was reset"
    finally:
        handlers.slow.release.set()
        running.join(10)
    assert batch_status(db, "p", "b1") == "CANCELLED"
    # Once CANCELLED, the same rerun is allowed: the batch runs again.
    assert dag.rerun(Rerun(batch_id="b1", pipeline="p", **rerun)) > 0
    assert batch_status(db, "p", "b1") == "RUNNING"


@pytest.fixture
def mapped_with_teardown(db: Engine, insert_pipeline: Any) -> None:
    """p: src -> each (mapped) -> join, slow, and cleanup (teardown) after each."""
    edges = {"src": [], "each": ["src"], "join": ["each"], "slow": [], "cleanup": ["each"]}
    insert_pipeline(
        "p",
        edges,
        handlers={"src": "t.src", "each": "t.each", "join": "t.join", "slow": "t.slow"}
        | {"cleanup": "t.join"},
    )
    set_map(db, "p", "each", {"over": "src.items"})
    with db.begin() as conn:
        conn.execute(
            text(
                "UPDATE tasks SET teardown = true, trigger_rule = 'all_done' WHERE name = 'cleanup'"
            )
        )


def cleanup_status(db: Engine) -> str | None:
    with db.connect() as conn:
        return conn.execute(
            text(
                "SELECT tl.status::text FROM task_log tl JOIN tasks t USING (task_id) "
                "WHERE t.name = 'cleanup'"
            )
        ).scalar_one_or_none()


@pytest.mark.usefixtures("mapped_with_teardown")
def test_a_teardown_below_a_cancelled_map_waits_for_its_running_items(
    dag: DagEngine, db: Engine, publisher: InMemoryPublisher, handlers: Handlers
) -> None:
    handlers.count, handlers.gated = 4, 1
    dag.start_batch(StartBatch("p", "b1"))
    publisher.drain()
    run_slow_through(dag, handlers)
    dag.run_task(RunTask("b1", "src", pipeline="p"))
    publisher.drain()
    dag.run_task(RunTask("b1", "each", pipeline="p", map_index=0))
    item = RunTask("b1", "each", pipeline="p", map_index=1)
    running = threading.Thread(target=lambda: dag.run_task(item))
    running.start()
    try:
        assert handlers.gate.entered.wait(10)
        dag.cancel_batch(CancelBatch("p", "b1"))
        assert cleanup_status(db) is None, "item 1 still runs: the clean-up must wait"
    finally:
        handlers.gate.release.set()
        running.join(10)
    assert cleanup_status(db) == "NEW"
    assert batch_status(db, "p", "b1") == "CANCELLING"
    drive(dag, publisher)
    assert cleanup_status(db) == "SUCCESS"
    assert batch_status(db, "p", "b1") == "CANCELLED"

    dag.resume(Resume("p", "b1"))
    drive(dag, publisher)
    assert batch_status(db, "p", "b1") == "SUCCESS"
    assert handlers.runs[("join", None)] == 1
    assert handlers.runs[("cleanup", None)] == 2, "the clean-up on the cancel, and after"
    assert {i: handlers.runs[("each", i)] for i in range(4)} == dict.fromkeys(range(4), 1)


@pytest.mark.usefixtures("mapped_with_teardown")
def test_two_items_ending_together_after_a_cancel_start_the_teardown_once(
    dag: DagEngine, db: Engine, publisher: InMemoryPublisher, handlers: Handlers
) -> None:
    handlers.count, handlers.gates = 4, {0: Gate(), 1: Gate()}
    dag.start_batch(StartBatch("p", "b1"))
    publisher.drain()
    run_slow_through(dag, handlers)
    dag.run_task(RunTask("b1", "src", pipeline="p"))
    publisher.drain()
    items = [RunTask("b1", "each", pipeline="p", map_index=i) for i in (0, 1)]
    threads = [threading.Thread(target=lambda m=m: dag.run_task(m)) for m in items]
    for t in threads:
        t.start()
    try:
        assert all(g.entered.wait(10) for g in handlers.gates.values())
        dag.cancel_batch(CancelBatch("p", "b1"))
    finally:
        for g in handlers.gates.values():
            g.release.set()  # both end at once
        for t in threads:
            t.join(10)
    assert cleanup_status(db) == "NEW"
    fanin = scalar(
        db,
        "SELECT f.failed FROM task_fanin f JOIN tasks t USING (task_id) WHERE t.name = 'cleanup'",
    )
    assert fanin == 1, "the cancelled group is counted once"
    drive(dag, publisher)
    assert batch_status(db, "p", "b1") == "CANCELLED"
    assert handlers.runs[("cleanup", None)] == 1
