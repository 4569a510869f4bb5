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
from pathlib import Path
from typing import Any

import functions_framework
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.engine.core import RunOutcome
from dagrelay.engine.hooks import EngineHooks
from dagrelay.engine.sweeper import Sweeper
from dagrelay.handlers.registry import HandlerContext, HandlerRegistry
from dagrelay.local.crashes import InjectedCrash
from dagrelay.messages import Envelope, RunTask, parse
from dagrelay.router.wiring import build_engine
from dagrelay.store.outbox import InMemoryPublisher, OutgoingMessage
from tests.conftest import engine_settings

MAIN = Path(__file__).resolve().parents[2] / "functions" / "main.py"
# functions-framework's create_app carries no annotations; this is its type, stated once.
_create_app: Callable[..., Flask] = functions_framework.create_app


def framework_client(target: str, signature_type: str) -> FlaskClient:
    """functions/main.py's ``target`` under functions-framework, through Flask's test client."""
    return _create_app(target=target, source=str(MAIN), signature_type=signature_type).test_client()


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


def raise_huge(chars: int) -> None:
    """Fails with an error message of ``chars`` characters (an error quoting a huge input)."""
    raise ValueError("x" * chars)


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


# -- reliability: fault-injection helpers (tests/integration/test_reliability_*.py) -----------

_flaky_lock = threading.Lock()
FLAKY: Counter[tuple[str, str]] = Counter()


def flaky(context: HandlerContext, fails: int) -> dict[str, Any]:
    """Fails the first ``fails`` calls for each (batch_id, task), then succeeds."""
    with _flaky_lock:
        FLAKY[(context.batch_id, context.task)] += 1
        calls = FLAKY[(context.batch_id, context.task)]
    if calls <= fails:
        raise RuntimeError(f"flaky failure {calls} of {fails}")
    return {"calls": calls}


HOOKS: dict[str, Callable[[HandlerContext], Any]] = {}


def call_hook(context: HandlerContext, hook: str) -> dict[str, Any]:
    """Runs the test's own function registered in HOOKS (it can reach the engine, the clock,
    the sweeper, events...) as the task's handler."""
    return HOOKS[hook](context) or {}


class Gate:
    """A handler that signals it started, then blocks until the test releases it."""

    def __init__(self, timeout_s: float = 30) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.timeout_s = timeout_s

    def __call__(self, context: HandlerContext) -> dict[str, Any]:
        self.entered.set()
        assert self.release.wait(self.timeout_s), "the gate was never released"
        return {"gated": context.task}


EFFECTS_DDL = (
    "CREATE TABLE effects (batch_id text, task text, attempt integer, idempotency_key text)"
)


def record_effect(context: HandlerContext, db_url: str) -> dict[str, Any]:
    """The task's side effect: one row in the test database's ``effects`` table, written on a
    connection of its own (as a real handler writing elsewhere would)."""
    engine = create_engine(db_url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO effects VALUES (:b, :t, :a, :k)"),
                {
                    "b": context.batch_id,
                    "t": context.task,
                    "a": context.attempt,
                    "k": context.idempotency_key,
                },
            )
    finally:
        engine.dispose()
    return {"effect": context.attempt}


CRASH = "CRASH"


def drive_faulty(
    engine: DagEngine,
    publisher: InMemoryPublisher,
    *,
    rng: random.Random | None = None,
    copies: tuple[int, int] = (1, 1),
    every: int = 0,
    between: Callable[[], Any] | None = None,
    max_deliveries: int = 10_000,
) -> list[tuple[str, str]]:
    """Like drive(), but a delivery that dies at an injected crash point is recorded as CRASH
    (the instance died; the sweeper repairs), each message is delivered a number of times
    drawn from ``copies``, and ``between()`` runs after every ``every`` deliveries."""
    pending: list[RunTask] = []
    outcomes: list[tuple[str, str]] = []
    while True:
        for message in publisher.drain(EVENTS_TOPIC):
            n = rng.randint(*copies) if rng else copies[0]
            pending += [as_run_task(message)] * n
        if not pending:
            return outcomes
        assert len(outcomes) < max_deliveries, "the batch does not converge"
        msg = pending.pop(rng.randrange(len(pending)) if rng else 0)
        try:
            outcomes.append((msg.task, engine.run_task(msg).value))
        except InjectedCrash:
            outcomes.append((msg.task, CRASH))
        if every and between is not None and len(outcomes) % every == 0:
            between()


def settle(
    engine: DagEngine,
    publisher: InMemoryPublisher,
    clock: Callable[[float], Any],
    batch: tuple[str, str],
    *,
    rounds: int = 10,
    **drive_kwargs: Any,
) -> list[tuple[str, str]]:
    """drive_faulty() until nothing is left; while the batch is still RUNNING, let two minutes
    pass (``clock`` advances the test's clock) and sweep with older_than_s=60, then drive again."""
    outcomes = drive_faulty(engine, publisher, **drive_kwargs)
    for _ in range(rounds):
        if batch_status(engine.db, *batch) != "RUNNING":
            return outcomes
        clock(120)
        Sweeper(engine).sweep(older_than_s=60)
        outcomes += drive_faulty(engine, publisher, **drive_kwargs)
    raise AssertionError(f"batch {batch} still RUNNING after {rounds} sweeps: {outcomes}")


def set_task_columns(db: Engine, **columns: Any) -> None:
    """UPDATE tasks SET <column> = <value>, ... for every task (retry policy, timeout_s)."""
    assignments = ", ".join(f"{name} = :{name}" for name in columns)
    with db.begin() as conn:
        conn.execute(text(f"UPDATE tasks SET {assignments}"), columns)


def make_engine(
    db: Engine,
    publisher: InMemoryPublisher,
    clock: Callable[[], Any],
    *,
    seed: int = 1,
    hooks: EngineHooks | None = None,
    registry: HandlerRegistry | None = None,
) -> DagEngine:
    """The engine fixture's twin with a seeded jitter rng and, optionally, hooks (armed crash
    points) and a registry of the test's own handlers."""
    return build_engine(
        engine_settings(),
        db=db,
        publisher=publisher,
        registry=registry,
        clock=clock,
        rng=random.Random(seed),
        hooks=hooks,
    )


ALERTS_TOPIC = "dagrelay-alerts"


def outbox_rows(db: Engine, topic: str = EVENTS_TOPIC) -> list[dict[str, Any]]:
    """The outbox rows of one topic, oldest first, with the task each run_task is for."""
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT outbox_id, payload, payload->>'task' AS task, available_at, "
                "published_at, publish_attempts, last_error FROM outbox "
                "WHERE topic = :topic ORDER BY outbox_id"
            ),
            {"topic": topic},
        ).mappings()
        return [dict(r) for r in rows]
