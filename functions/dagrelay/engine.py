"""The engine owns every state transition of a batch. Each step is a checked write in PostgreSQL;
messages are written to the outbox in the same transaction and published after commit.

Transaction shape of one task run (see DESIGN.md section 1):
  1. claim (NEW -> PROCESSING, attempt + 1)                      one statement, own transaction
  2. run the handler                                             no transaction held
  3. finish (PROCESSING -> SUCCESS|ERROR) + advance children     one transaction
  4. publish the new messages, mark them published               after commit
  5. if nothing new can start: try to finish the batch           own statement
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection
from sqlalchemy import Engine as SqlEngine

from dagrelay import params as params_mod
from dagrelay import store
from dagrelay.db import retry_transient
from dagrelay.errors import BadMessage, NonRetryableError
from dagrelay.handlers.registry import HandlerContext, HandlerRegistry, check_output
from dagrelay.messages import RunTask, StartBatch
from dagrelay.publisher import OutgoingMessage, Publisher
from dagrelay.states import TaskStatus

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
MAX_ERROR_CHARS = 4000
RELAY_AFTER_S = 30


def utcnow() -> datetime:
    return datetime.now(UTC)


class RunOutcome(StrEnum):
    SUCCESS = "SUCCESS"
    ERROR = "ERROR"
    IGNORED = "IGNORED"  # duplicate or late message: acknowledged, nothing done


@dataclass(frozen=True)
class Outcome:
    """How a handler run ended."""

    status: TaskStatus
    output: Mapping[str, Any] | None = None
    error: str | None = None


@dataclass(frozen=True)
class StartOutcome:
    created: bool
    roots: int


class Engine:
    def __init__(
        self,
        db: SqlEngine,
        publisher: Publisher,
        registry: HandlerRegistry,
        *,
        events_topic: str,
        worker_id: str,
        clock: Clock = utcnow,
    ) -> None:
        self.db = db
        self.publisher = publisher
        self.registry = registry
        self.events_topic = events_topic
        self.worker_id = worker_id
        self.clock = clock

    # -- start_batch ---------------------------------------------------------------------------

    def start_batch(self, msg: StartBatch, message_id: str | None = None) -> StartOutcome:
        extra = {"action": "start_batch", "pipeline": msg.pipeline, "batch_id": msg.batch_id}
        now = self.clock()
        with self.db.begin() as conn:
            tasks = store.pipeline_tasks(conn, msg.pipeline)
            if not tasks:
                raise BadMessage(f"unknown pipeline {msg.pipeline!r} (it has no tasks)")
            if msg.start_task is not None and msg.start_task not in tasks:
                raise BadMessage(
                    f"start_task {msg.start_task!r} is not a task of pipeline {msg.pipeline!r}"
                )
            created = store.start_batch(
                conn,
                pipeline=msg.pipeline,
                batch_id=msg.batch_id,
                params=msg.params,
                start_task=msg.start_task,
                triggered_by=msg.triggered_by or "message",
                message_id=message_id,
                topic=self.events_topic,
                now=now,
            )
            if not created.batch_created:
                log.info("batch already exists: start_batch ignored", extra=extra)
                return StartOutcome(created=False, roots=0)
            cascade = self._advance(conn, msg.batch_id, _skipped_roots(created), now)
        messages = created.messages + cascade.messages
        self._publish(messages)
        log.info("batch started", extra={**extra, "roots": len(created.tasks)})
        if not messages:
            self._finish_batch(msg.pipeline, msg.batch_id)
        return StartOutcome(created=True, roots=len(created.tasks))

    # -- run_task ------------------------------------------------------------------------------

    def run_task(self, msg: RunTask) -> RunOutcome:
        extra: dict[str, Any] = {"action": "run_task", "batch_id": msg.batch_id, "task": msg.task}
        with self.db.begin() as conn:
            claim = store.claim(
                conn, batch_id=msg.batch_id, task=msg.task, now=self.clock(), worker=self.worker_id
            )
            if claim is None:
                return self._not_claimed(conn, msg, extra)
        extra |= {"pipeline": claim.pipeline, "attempt": claim.attempt}
        log.info("task claimed", extra=extra)
        outcome = self._execute(claim, msg.batch_id)
        return self._finish(claim, msg.batch_id, outcome, extra)

    def _not_claimed(self, conn: Connection, msg: RunTask, extra: dict[str, Any]) -> RunOutcome:
        state = store.task_state(conn, batch_id=msg.batch_id, task=msg.task)
        if state is None:
            raise BadMessage(f"unknown task {msg.task!r}")
        if state.status is None:
            raise BadMessage(f"task {msg.task!r} has no task_log row in batch {msg.batch_id!r}")
        log.info(
            "run_task ignored: task is %s (attempt %s), batch is %s",
            state.status,
            state.attempt,
            state.batch_status,
            extra={**extra, "status": str(state.status)},
        )
        return RunOutcome.IGNORED

    def _execute(self, claim: store.Claim, batch_id: str) -> Outcome:
        """Run the handler; never raises: a failure is an ERROR outcome with its text."""
        try:
            values = {**claim.batch_params, "batch_id": batch_id, "pipeline": claim.pipeline}
            registration = self.registry.get(claim.handler)
            resolved = params_mod.resolve(claim.params, values)
            registration.check_params(resolved, claim.task)
            context = HandlerContext(
                pipeline=claim.pipeline,
                batch_id=batch_id,
                task=claim.task,
                attempt=claim.attempt,
                params=resolved,
                batch_params=claim.batch_params,
                parent_outputs=claim.parent_outputs,
            )
            output = check_output(registration.function(context), claim.task)
        except Exception as exc:  # noqa: BLE001 - any handler failure is the task's outcome
            return Outcome(TaskStatus.ERROR, error=_describe(exc))
        return Outcome(TaskStatus.SUCCESS, output=output)

    def _finish(
        self,
        claim: store.Claim,
        batch_id: str,
        outcome: Outcome,
        extra: dict[str, Any],
    ) -> RunOutcome:
        status = outcome.status

        def transaction() -> store.Created | None:
            now = self.clock()
            with self.db.begin() as conn:
                landed = store.finish_attempt(
                    conn,
                    log_id=claim.log_id,
                    attempt=claim.attempt,
                    status=status,
                    output=outcome.output,
                    error=outcome.error,
                    now=now,
                )
                if not landed:
                    return None
                root = claim.log_id if status == TaskStatus.ERROR else None
                finished = [store.Transition(claim.task_id, status, root)]
                return self._advance(conn, batch_id, finished, now)

        created = retry_transient(transaction)
        if created is None:
            log.warning("late result rejected: the task moved on", extra=extra)
            return RunOutcome.IGNORED
        if status == TaskStatus.ERROR:
            log.error("task failed: %s", outcome.error, extra=extra)
        else:
            log.info("task succeeded", extra=extra)
        self._publish(created.messages)
        if not any(t.status == TaskStatus.NEW for t in created.tasks):
            self._finish_batch(claim.pipeline, batch_id)
        return RunOutcome(status.value)

    # -- fan-in / fan-out ----------------------------------------------------------------------

    def _advance(
        self,
        conn: Connection,
        batch_id: str,
        finished: Sequence[store.Transition],
        now: datetime,
    ) -> store.Created:
        """check_and_trigger_children: one set-based statement per level. Children that can
        never run (UPSTREAM_FAILED, SKIPPED) are terminal at birth, so their own children are
        decided in the next level, inside the same transaction."""
        tasks: list[store.CreatedTask] = []
        messages: list[OutgoingMessage] = []
        frontier = list(finished)
        while frontier:
            created = store.advance_children(
                conn, batch_id=batch_id, finished=frontier, topic=self.events_topic, now=now
            )
            tasks += created.tasks
            messages += created.messages
            frontier = [
                store.Transition(t.task_id, t.status, t.root_cause_log_id)
                for t in created.tasks
                if t.status != TaskStatus.NEW
            ]
        return store.Created(tasks, messages)

    def _finish_batch(self, pipeline: str, batch_id: str) -> None:
        with self.db.begin() as conn:
            status = store.finish_batch(
                conn, pipeline=pipeline, batch_id=batch_id, now=self.clock()
            )
        if status is not None:
            extra = {"action": "finish_batch", "pipeline": pipeline, "batch_id": batch_id}
            level = logging.ERROR if status == "FAILED" else logging.INFO
            log.log(level, "batch %s", status, extra={**extra, "status": status})

    # -- outbox --------------------------------------------------------------------------------

    def _publish(self, messages: Sequence[OutgoingMessage]) -> None:
        """Publish after commit. A failed publish stays in the outbox for the relay."""
        if not messages:
            return
        results = self.publisher.publish(messages)
        sent = [m.outbox_id for m, r in zip(messages, results, strict=True) if r is None]
        failed = [(m.outbox_id, r) for m, r in zip(messages, results, strict=True) if r]
        with self.db.begin() as conn:
            if sent:
                store.mark_published(conn, [i for i in sent if i is not None], self.clock())
            if failed:
                errors = "; ".join(sorted({repr(r) for _, r in failed}))
                store.mark_publish_failed(conn, [i for i, _ in failed if i is not None], errors)
        for outbox_id, exc in failed:
            log.warning("publish failed; left in outbox: %r", exc, extra={"outbox_id": outbox_id})

    def relay_outbox(self, older_than_s: int | None = None, limit: int = 500) -> int:
        """Publish outbox rows that stayed unpublished for ``older_than_s`` seconds (default 30).
        Republishing is harmless: a duplicate run_task is acknowledged and ignored."""
        cutoff = self.clock() - timedelta(
            seconds=RELAY_AFTER_S if older_than_s is None else older_than_s
        )
        with self.db.begin() as conn:
            pending = store.lock_unpublished_outbox(conn, cutoff=cutoff, limit=limit)
            if not pending:
                return 0
            results = self.publisher.publish(pending)
            sent = [m.outbox_id for m, r in zip(pending, results, strict=True) if r is None]
            store.mark_published(conn, [i for i in sent if i is not None], self.clock())
        log.info("outbox relayed", extra={"action": "sweep", "relayed": len(sent)})
        return len(sent)


def _skipped_roots(created: store.Created) -> list[store.Transition]:
    return [
        store.Transition(t.task_id, t.status) for t in created.tasks if t.status != TaskStatus.NEW
    ]


def _describe(exc: BaseException) -> str:
    """The error text kept in task_log: type, message, and where it was raised."""
    kind = "non-retryable " if isinstance(exc, NonRetryableError) else ""
    frames = reversed(traceback.extract_tb(exc.__traceback__)[-3:])
    where = " <- ".join(f"{f.name} ({f.filename.rsplit('/', 1)[-1]}:{f.lineno})" for f in frames)
    text = f"{kind}{type(exc).__name__}: {exc}"
    if where:
        text += f" [at {where}]"
    return text[:MAX_ERROR_CHARS]
