"""Small helpers shared by the integration tests: drive a batch through the engine, read its
rows back, and handler functions for ``python.call`` tasks."""

from __future__ import annotations

import base64
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, create_engine, text

from dagrelay.engine import Engine as DagEngine
from dagrelay.engine import RunOutcome
from dagrelay.handlers.registry import HandlerContext
from dagrelay.messages import Envelope, RunTask, parse
from dagrelay.publisher import InMemoryPublisher, OutgoingMessage

HELPERS = "tests.integration.helpers"

# -- handler functions (python.call) ----------------------------------------------------------

_runs_lock = threading.Lock()
RUNS: Counter[tuple[str, str]] = Counter()


def record_run(context: HandlerContext) -> dict[str, Any]:
    """Counts every handler run by (batch_id, task)."""
    with _runs_lock:
        RUNS[(context.batch_id, context.task)] += 1
    return {"task": context.task}


def echo_parents(context: HandlerContext, label: str) -> dict[str, Any]:
    """Returns what the handler saw: its parents' outputs and a resolved param."""
    return {"parents": dict(context.parent_outputs), "label": label}


def move_row_on(context: HandlerContext, db_url: str, sql: str) -> None:
    """Plays the sweeper while the handler runs: changes this task's row behind its back."""
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    sql + " WHERE batch_id = :b AND task_id = (SELECT task_id FROM tasks "
                    "WHERE name = :t)"
                ),
                {"b": context.batch_id, "t": context.task},
            )
    finally:
        engine.dispose()


def call_params(function: str, **kwargs: Any) -> str:
    return json.dumps({"callable": f"{HELPERS}:{function}", "kwargs": kwargs})


EVENTS_TOPIC = "dagrelay-events"  # the engine fixture's (tests/conftest.py)

# -- driving a batch --------------------------------------------------------------------------


def as_run_task(message: OutgoingMessage) -> RunTask:
    """What the router would make of an outbox message (so it must pass the JSON Schema)."""
    data = base64.b64encode(message.data()).decode()
    parsed = parse(Envelope(data, dict(message.attributes), f"outbox-{message.outbox_id}"))
    assert isinstance(parsed, RunTask), parsed
    return parsed


def drive(
    engine: DagEngine,
    publisher: InMemoryPublisher,
    *,
    copies: int = 1,
    rng: random.Random | None = None,
    max_deliveries: int = 10_000,
) -> list[tuple[str, RunOutcome]]:
    """Deliver every published message (``copies`` times each, in random order when ``rng`` is
    given) until nothing is left. Returns (task, outcome) per delivery."""
    pending: list[RunTask] = []
    outcomes: list[tuple[str, RunOutcome]] = []
    while True:
        events = publisher.drain(EVENTS_TOPIC)
        pending += [as_run_task(m) for m in events for _ in range(copies)]
        if not pending:
            return outcomes
        assert len(outcomes) < max_deliveries, "the batch does not converge"
        index = rng.randrange(len(pending)) if rng else 0
        msg = pending.pop(index)
        outcomes.append((msg.task, engine.run_task(msg)))


def run_together(workers: list[Callable[[], Any]], timeout_s: float = 60) -> list[Any]:
    """Run the callables in threads released together by a barrier; re-raise any error."""
    barrier = threading.Barrier(len(workers))
    results: list[Any] = [None] * len(workers)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=timeout_s)
            results[i] = workers[i]()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s)
    assert not any(t.is_alive() for t in threads), "a worker did not finish in time"
    if errors:
        raise errors[0]
    return results


def wait_for(condition: Callable[[], bool], timeout_s: float = 10, what: str = "") -> None:
    """Poll a condition until it holds or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
        time.sleep(0.01)


# -- reading rows back ------------------------------------------------------------------------


def task_rows(db: Engine, batch_id: str) -> dict[str, dict[str, Any]]:
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT t.name, tl.log_id, tl.status::text AS status, tl.attempt, tl.output, "
                "tl.error, tl.root_cause_log_id FROM task_log tl "
                "JOIN tasks t USING (task_id) WHERE tl.batch_id = :b"
            ),
            {"b": batch_id},
        ).mappings()
        return {r["name"]: dict(r) for r in rows}


def statuses(db: Engine, batch_id: str) -> dict[str, str]:
    return {name: row["status"] for name, row in task_rows(db, batch_id).items()}


def batch_status(db: Engine, pipeline: str, batch_id: str) -> str | None:
    with db.connect() as conn:
        return conn.execute(
            text("SELECT status::text FROM batches WHERE pipeline = :p AND batch_id = :b"),
            {"p": pipeline, "b": batch_id},
        ).scalar_one_or_none()


def scalar(db: Engine, sql: str, **params: Any) -> Any:
    with db.connect() as conn:
        return conn.execute(text(sql), params).scalar_one()


def disable(db: Engine, *names: str) -> None:
    with db.begin() as conn:
        conn.execute(
            text("UPDATE tasks SET enabled = false WHERE name = ANY(CAST(:n AS text[]))"),
            {"n": list(names)},
        )
