"""The runner: applies a pipeline, starts a batch and delivers every message the engine
publishes in-process until none is left -- the next pending one at once (in order, or picked
with the seed), each twice in duplicate mode. A message held for later (a retry's backoff, a
deferred task's poll) is released by moving the runner's clock to when it is due: nothing
waits in real time and nothing polls."""

from __future__ import annotations

import base64
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from dagrelay.config import Settings
from dagrelay.engine.core import Engine as DagEngine
from dagrelay.errors import DagrelayError
from dagrelay.handlers.registry import Handler
from dagrelay.messages import Envelope, PollTask, RunTask, StartBatch, parse
from dagrelay.pipelines.api import Pipeline
from dagrelay.pipelines.apply import apply
from dagrelay.pipelines.sources import load_specs
from dagrelay.pipelines.spec import PipelineSpec
from dagrelay.pipelines.validate import registered_handlers, validate
from dagrelay.router.wiring import build_engine
from dagrelay.store import reads
from dagrelay.store.outbox import InMemoryPublisher, OutgoingMessage
from dagrelay.store.queries import query
from dagrelay.testing.databases import pooled_engine
from dagrelay.testing.effects import registry_for

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


# -- the runner ----------------------------------------------------------------------------------


class PipelineRunner:
    """Applies pipelines to its database and runs batches of them in-process."""

    def __init__(self, database: str | Engine, *, seed: int = 0) -> None:
        """On ``database``: a URL (the runner's own pooled engine, disposed by ``close``) or
        an engine it borrows (the plugin's, one per session)."""
        self._owned = isinstance(database, str)
        self.db: Engine = pooled_engine(database) if isinstance(database, str) else database
        self.seed = seed

    def close(self) -> None:
        if self._owned:
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
            registry=registry_for(fakes or {}, twice=duplicate),
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
