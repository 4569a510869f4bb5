"""Run a whole batch of a pipeline inside a test, like Airflow's ``dag.test()``.

The engine is the real one (built by ``build_engine``), on a temporary database of the real
PostgreSQL (created, migrated, dropped); the messages it publishes are delivered in-process
instead of through Pub/Sub -- in order, or shuffled and duplicated with a seed. Handlers can be
replaced by fakes per task. With ``duplicate=True`` every message is delivered twice and every
handler runs twice per attempt with the same context, as at-least-once delivery may do: a
handler whose second run fails or returns something else ends its task in ERROR, naming it.

    def test_etl(dagrelay_runner):
        result = dagrelay_runner.run(etl, fakes={"export": lambda ctx: {"rows": 0}})
        assert result.status == "SUCCESS"
        assert result["extract"].output == {"rows": 3}

The pytest fixture ``dagrelay_runner`` (``dagrelay.pytest_plugin``) makes one per test.
"""

from __future__ import annotations

import base64
import random
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
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
class TaskResult:
    name: str
    status: str | None  # None: the task never got a row (not reached)
    attempts: int
    output: Mapping[str, Any] | None
    error: str | None
    root_cause_task: str | None = None


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
        if batch is None:
            raise DagrelayError(f"no batch {batch_id!r} of pipeline {pipeline!r}")
        tasks = {
            t["task"]: TaskResult(
                t["task"],
                t["status"],
                t["attempt"],
                outputs.get(t["task"]),
                t["error"],
                t["root_cause_task"],
            )
            for t in batch["tasks"]
        }
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


def _registry(fakes: Mapping[str, Handler], *, twice: bool) -> HandlerRegistry:
    """The default registry's handlers, each run as ``fakes[task]`` for a faked task, and
    twice per attempt when ``twice``."""
    default_registry.load_plugins()
    registry = HandlerRegistry(load=False)
    for name in default_registry.names():
        r = default_registry.get(name)
        function = _twice(_per_task(r.function, fakes)) if twice else _per_task(r.function, fakes)
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


def _twice(function: Handler) -> Handler:
    def run(ctx: HandlerContext[Any]) -> Any:
        first = function(ctx)
        try:
            second = function(ctx)
        except Exception as exc:
            raise NonRetryableError(
                f"task {ctx.task!r} is not idempotent: its second run with the same context "
                f"(as a redelivery makes it) failed: {type(exc).__name__}: {exc}"
            ) from exc
        if second != first:
            raise NonRetryableError(
                f"task {ctx.task!r} is not idempotent: its second run with the same context "
                f"(as a redelivery makes it) returned {second!r}, the first {first!r}"
            )
        return second

    return run
