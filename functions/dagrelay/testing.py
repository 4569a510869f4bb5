"""Run a whole batch of a pipeline inside a test, like Airflow's ``dag.test()``.

The engine is the real one (built by ``build_engine``), on a temporary database of the real
PostgreSQL (created, migrated, dropped); the messages it publishes are delivered in-process
instead of through Pub/Sub -- in order, or shuffled and duplicated with a seed. Handlers can be
replaced by fakes per task. With ``duplicate=True`` every message is delivered twice and every
handler runs twice per attempt with the same context, as at-least-once delivery may do: a
handler whose second run fails, returns something else, or repeats a side effect recorded in a
``SideEffects`` fake without ``context.idempotency_key`` ends its task in ERROR, naming it.
A mapped task's result has one ``ItemResult`` per item (``result["t"].items``).

    def test_etl(dagrelay_runner):
        sent = SideEffects()
        export = lambda ctx: sent.record("upload", ctx.params, key=ctx.idempotency_key)
        result = dagrelay_runner.run(etl, fakes={"export": export}, duplicate=True)
        assert result.status == "SUCCESS"
        assert result["extract"].output == {"rows": 3}
        assert len(sent.applied) == 1

The pytest fixture ``dagrelay_runner`` (``dagrelay.pytest_plugin``) makes one per test.
"""

from __future__ import annotations

import base64
import random
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.pool import NullPool

from dagrelay.config import Settings
from dagrelay.engine.core import Engine as DagEngine
from dagrelay.errors import DagrelayError, NonRetryableError
from dagrelay.handlers.registry import Handler, HandlerContext, HandlerRegistry, default_registry
from dagrelay.messages import Envelope, PollTask, RunTask, StartBatch, parse
from dagrelay.pipelines.api import Pipeline
from dagrelay.pipelines.apply import apply
from dagrelay.pipelines.sources import load_specs
from dagrelay.pipelines.spec import PipelineSpec
from dagrelay.pipelines.validate import registered_handlers, validate
from dagrelay.router.wiring import build_engine
from dagrelay.store import migrate, reads
from dagrelay.store.outbox import InMemoryPublisher, OutgoingMessage
from dagrelay.store.queries import query

ADMIN_URL = "postgresql+pg8000://postgres@127.0.0.1:5432/postgres"
TOPIC = "dagrelay-events"
PipelineLike = Pipeline | PipelineSpec | str | Path


@dataclass(frozen=True)
class ItemResult:
    """One instance of a mapped task: its item's index, the item, how it ended."""

    index: int
    item: Any
    status: str
    attempts: int
    output: Mapping[str, Any] | None
    error: str | None


@dataclass(frozen=True)
class TaskResult:
    """How a task ended. For a mapped task, ``items`` holds each item's result by index,
    ``output`` is what its children see (its items' outputs by index, None for a failed item)
    and ``attempts`` counts its items' attempts; ``items`` is empty for any other task."""

    name: str
    status: str | None  # None: the task never got a row (not reached)
    attempts: int
    output: Any  # a mapping (or None); a mapped task's: a list
    error: str | None
    root_cause_task: str | None = None
    items: tuple[ItemResult, ...] = ()


@dataclass(frozen=True)
class BatchResult:
    pipeline: str
    batch_id: str
    status: str
    tasks: Mapping[str, TaskResult] = field(default_factory=dict)
    deliveries: int = 0

    def __getitem__(self, task: str) -> TaskResult:
        return self.tasks[task]

    def statuses(self) -> dict[str, str | None]:
        return {name: t.status for name, t in self.tasks.items()}


class FakeClock:
    """The runner's clock: the wall clock at start, moved forward to release held retries."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


# -- the temporary database ----------------------------------------------------------------------


@contextmanager
def temporary_database(admin_url: str = ADMIN_URL, template: str | None = None) -> Iterator[str]:
    """A new database on the server of ``admin_url``: a copy of ``template``, or migrated to
    head; dropped on exit. Yields its URL."""
    name = f"dagrelay_test_{uuid.uuid4().hex[:12]}"
    _admin(admin_url, f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        if template is None:
            engine = create_engine(url, poolclass=NullPool)
            try:
                migrate.upgrade(engine)
            finally:
                engine.dispose()
        yield url
    finally:
        _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _admin(admin_url: str, statement: str) -> None:
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


# -- the runner ----------------------------------------------------------------------------------


class PipelineRunner:
    """Applies pipelines to its database and runs batches of them in-process."""

    def __init__(self, database_url: str, *, seed: int = 0) -> None:
        self.db: Engine = create_engine(database_url, poolclass=NullPool)
        self.seed = seed

    def close(self) -> None:
        self.db.dispose()

    def apply(self, pipeline: PipelineLike) -> list[PipelineSpec]:
        """Validate (graph, handlers, params) and write the pipeline(s)."""
        specs = _specs(pipeline)
        handlers = registered_handlers()
        for spec in specs:
            validate(spec, handlers)
        with self.db.begin() as conn:
            for spec in specs:
                apply(conn, spec)
        return specs

    def run(
        self,
        pipeline: PipelineLike,
        batch_id: str = "test",
        params: Mapping[str, Any] | None = None,
        *,
        fakes: Mapping[str, Handler] | None = None,
        shuffle: bool = False,
        duplicate: bool = False,
        seed: int | None = None,
        start_task: str | None = None,
        max_deliveries: int = 10_000,
    ) -> BatchResult:
        """Apply the pipeline, start batch ``batch_id`` and deliver every message until none
        is left; the batch's tasks as they ended. ``fakes`` maps task names to handlers run
        instead of theirs (same params, same context)."""
        specs = self.apply(pipeline)
        if len(specs) != 1:
            names = [s.pipeline for s in specs]
            raise DagrelayError(f"{pipeline}: defines {names}; pass the one Pipeline to run")
        spec = specs[0]
        unknown = set(fakes or {}) - {t.name for t in spec.tasks}
        if unknown:
            raise DagrelayError(f"fakes for tasks not in {spec.pipeline!r}: {sorted(unknown)}")
        rng = random.Random(self.seed if seed is None else seed)  # noqa: S311 - test order
        publisher, clock = InMemoryPublisher(), FakeClock()
        engine = build_engine(
            Settings(worker_id="dagrelay.testing", events_topic=TOPIC, handler_modules=[]),
            db=self.db,
            publisher=publisher,
            registry=_registry(fakes or {}, twice=duplicate),
            clock=clock,
            rng=rng,
        )
        message = StartBatch(spec.pipeline, batch_id, dict(params or {}), start_task=start_task)
        engine.start_batch(message)
        deliveries = _deliver(
            engine,
            publisher=publisher,
            clock=clock,
            rng=rng if shuffle else None,
            copies=2 if duplicate else 1,
            limit=max_deliveries,
        )
        return self.result(spec.pipeline, batch_id, deliveries)

    def result(self, pipeline: str, batch_id: str, deliveries: int = 0) -> BatchResult:
        with self.db.connect() as conn:
            batch = reads.read_batch(conn, pipeline, batch_id)
            outputs = reads.batch_outputs(conn, pipeline, batch_id)
            instances = reads.batch_items(conn, pipeline, batch_id)
        if batch is None:
            raise DagrelayError(f"no batch {batch_id!r} of pipeline {pipeline!r}")
        tasks = {}
        for t in batch["tasks"]:
            items = tuple(
                ItemResult(
                    i["map_index"], i["item"], i["status"], i["attempt"], i["output"], i["error"]
                )
                for i in instances.get(t["task"], [])
            )
            attempts = sum(i.attempts for i in items) if items else t["attempt"]
            tasks[t["task"]] = TaskResult(
                t["task"],
                t["status"],
                attempts,
                outputs.get(t["task"]),
                t["error"],
                t["root_cause_task"],
                items,
            )
        return BatchResult(pipeline, batch_id, batch["status"], tasks, deliveries)


def _specs(pipeline: PipelineLike) -> list[PipelineSpec]:
    if isinstance(pipeline, Pipeline):
        return [pipeline.spec()]
    if isinstance(pipeline, PipelineSpec):
        return [pipeline]
    return load_specs(pipeline)


def _deliver(
    engine: DagEngine,
    *,
    publisher: InMemoryPublisher,
    clock: FakeClock,
    rng: random.Random | None,
    copies: int,
    limit: int,
) -> int:
    """Deliver published messages until nothing is left, releasing held ones (retries, polls)
    by moving the clock to when they are due. Returns the number of deliveries."""
    pending: list[RunTask | PollTask] = []
    deliveries = 0
    while True:
        pending += [m for m in map(_message, publisher.drain(TOPIC)) if m for _ in range(copies)]
        if not pending and not _release_held(engine, clock):
            return deliveries
        if not pending:
            continue
        if deliveries >= limit:
            raise DagrelayError(f"the batch did not converge in {limit} deliveries")
        message = pending.pop(rng.randrange(len(pending)) if rng else 0)
        deliveries += 1
        if isinstance(message, RunTask):
            engine.run_task(message)
        else:
            engine.poll_task(message)


def _message(outgoing: OutgoingMessage) -> RunTask | PollTask | None:
    data = base64.b64encode(outgoing.data()).decode()
    parsed = parse(Envelope(data, dict(outgoing.attributes), f"outbox-{outgoing.outbox_id}"))
    return parsed if isinstance(parsed, RunTask | PollTask) else None


def _release_held(engine: DagEngine, clock: FakeClock) -> bool:
    """Move the clock to the earliest held outbox message and publish what is due; whether
    anything was."""
    with engine.db.connect() as conn:
        due = conn.execute(query("next_held_outbox")).scalar_one()
    if due is None:
        return False
    clock.now = max(clock.now, due) + timedelta(milliseconds=1)
    return engine.outbox.relay(cutoff=clock.now, limit=1000) > 0


# -- fakes and the second run --------------------------------------------------------------------


@dataclass(frozen=True)
class Effect:
    """A side effect a handler made through a ``SideEffects`` fake, with the run it came from."""

    name: str
    payload: Any
    key: str | None
    task: str | None  # None: recorded outside a handler run of the runner
    map_index: int | None


@dataclass
class _Run:
    """One run of a handler by the runner: the effects it applied."""

    task: str
    map_index: int | None
    applied: list[Effect] = field(default_factory=list)


_RUN: ContextVar[_Run | None] = ContextVar("dagrelay_testing_run", default=None)


class SideEffects:
    """A fake of the outside world a handler changes (a mail sent, a file uploaded, a row
    sent to an API): give it to the handler (a closure, a fake client built on it, a fake in
    ``fakes``) and have it call ``record`` where the real call would be.

    A ``key`` makes the effect idempotent, as an idempotency key, a job id or an object name
    does for a real service: an effect whose key was applied already is not applied again.
    In duplicate mode the runner runs each handler twice with the same context; a second run
    that applies an effect (no key, or a key that changes from run to run) repeats it, and the
    task ends ERROR saying so. Use ``context.idempotency_key`` (or a key derived from it) as
    the key. Effects are attributed to the handler run in progress in the runner's thread."""

    def __init__(self) -> None:
        self.applied: list[Effect] = []
        self._keys: set[str] = set()

    def record(self, name: str, payload: Any = None, *, key: str | None = None) -> bool:
        """Apply the effect ``name`` (with ``payload``) unless ``key`` was applied already;
        whether it was applied."""
        if key is not None and key in self._keys:
            return False
        run = _RUN.get()
        task, index = (run.task, run.map_index) if run is not None else (None, None)
        effect = Effect(name, payload, key, task, index)
        self.applied.append(effect)
        if key is not None:
            self._keys.add(key)
        if run is not None:
            run.applied.append(effect)
        return True

    def names(self) -> list[str]:
        return [e.name for e in self.applied]


def _registry(fakes: Mapping[str, Handler], *, twice: bool) -> HandlerRegistry:
    """The default registry's handlers, each run as ``fakes[task]`` for a faked task, and
    twice per attempt when ``twice``."""
    default_registry.load_plugins()
    registry = HandlerRegistry(load=False)
    for name in default_registry.names():
        r = default_registry.get(name)
        function = _per_task(r.function, fakes)
        function = _twice(function) if twice else _once(function)
        registry.register(
            name, function, r.params_schema, r.poll, r.raw_params, params_model=r.params_model
        )
    return registry


def _per_task(function: Handler, fakes: Mapping[str, Handler]) -> Handler:
    if not fakes:
        return function

    def run(ctx: HandlerContext[Any]) -> Any:
        return fakes.get(ctx.task, function)(ctx)

    return run


def _in_run(function: Handler, ctx: HandlerContext[Any]) -> tuple[Any, _Run]:
    """Call the handler as one run: the effects it applies are attributed to it."""
    run = _Run(ctx.task, ctx.map_index)
    token = _RUN.set(run)
    try:
        return function(ctx), run
    finally:
        _RUN.reset(token)


def _once(function: Handler) -> Handler:
    def run(ctx: HandlerContext[Any]) -> Any:
        return _in_run(function, ctx)[0]

    return run


def _twice(function: Handler) -> Handler:
    def run(ctx: HandlerContext[Any]) -> Any:
        first, _ = _in_run(function, ctx)
        redelivery = "its second run with the same context (as a redelivery makes it)"
        try:
            second, again = _in_run(function, ctx)
        except Exception as exc:
            raise NonRetryableError(
                f"task {ctx.task!r} is not idempotent: {redelivery} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if again.applied:
            raise NonRetryableError(
                f"task {ctx.task!r} is not idempotent: {redelivery} " + _repeated(again.applied[0])
            )
        if second != first:
            raise NonRetryableError(
                f"task {ctx.task!r} is not idempotent: {redelivery} returned {second!r}, "
                f"the first {first!r}"
            )
        return second

    return run


def _repeated(effect: Effect) -> str:
    how = "without a key" if effect.key is None else f"under a new key {effect.key!r}"
    return (
        f"repeated the side effect {effect.name!r} ({how}); record it with "
        "key=context.idempotency_key (or a key derived from it) so a repeat is recognised"
    )
