"""The engine owns every state transition of a batch. Each step is a checked write in PostgreSQL;
messages are written to the outbox in the same transaction and published after commit.

Transaction shape of one task run (ARCHITECTURE.md, "Flow of one message"):
  1. claim (NEW|due RETRY -> PROCESSING, attempt + 1, lease)     one statement, own transaction
  2. run the handler (it may heartbeat to extend its lease)      no transaction held
  3. conclude: PROCESSING -> SUCCESS|RETRY|ERROR, fenced by attempt, with the children it
     releases (advance_children) or its delayed retry message, and on ERROR the one alert
  4. publish the messages that are due, mark them published      after commit
  5. if nothing new can start: try to finish the batch           own statement
A crash between any two steps is repaired by the sweeper (sweeper.py).
"""

from __future__ import annotations

import logging
import random
import traceback
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection
from sqlalchemy import Engine as SqlEngine
from sqlalchemy.exc import DBAPIError

from dagrelay import tracing
from dagrelay.bounds import stored_error
from dagrelay.engine import admission, assets, maps, moves, retry
from dagrelay.engine import params as params_mod
from dagrelay.engine.hooks import NO_HOOKS, EngineHooks, HookPoint
from dagrelay.errors import BadMessage, DagrelayError, NonRetryableError, SkipTask, WaitCancelled
from dagrelay.handlers.registry import (
    WAITING_FOR,
    Deferred,
    HandlerContext,
    HandlerRegistry,
    Registration,
    check_deferred,
    check_output,
)
from dagrelay.messages import (
    CancelBatch,
    PollTask,
    Rerun,
    Resume,
    RunTask,
    Signal,
    StartBatch,
    escaped,
)
from dagrelay.states import RERUN_FROM, Action, BatchStatus, TaskStatus
from dagrelay.store import cancelling, signals
from dagrelay.store import maps as store_maps
from dagrelay.store import transitions as store
from dagrelay.store import versions as store_versions
from dagrelay.store.db import refused_value, retry_transient
from dagrelay.store.outbox import OutboxRelay, OutgoingMessage, Publisher, with_trace_context

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# A deferred attempt whose handler's cancel failed for now is polled again this soon (and the
# cancel called again): ARCHITECTURE.md, "Deferred work".
STOP_RETRY_S = 10.0


class Stopped(DagrelayError):
    """A deferred attempt whose work the engine stopped because its batch was cancelled: the
    attempt ends CANCELLED (not retried, no alert)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class RunOutcome(StrEnum):
    SUCCESS = TaskStatus.SUCCESS
    RETRY = TaskStatus.RETRY
    ERROR = TaskStatus.ERROR
    CANCELLED = TaskStatus.CANCELLED  # failed while its batch was being cancelled: not retried
    SKIPPED = TaskStatus.SKIPPED  # the handler said so (SkipTask: a sensor's timeout)
    DEFERRED = "DEFERRED"  # the work goes on elsewhere; polled later
    IGNORED = "IGNORED"  # duplicate or late message: acknowledged, nothing done
    QUEUED = TaskStatus.QUEUED  # waits for a pool slot or its max_active: a freed slot releases it


@dataclass(frozen=True)
class Failure:
    """A handler failure as the engine sees it: the exception and its text for the log."""

    exception: BaseException
    error: str
    traceback: str


@dataclass(frozen=True)
class StartOutcome:
    created: bool
    roots: int


@dataclass(frozen=True)
class Resumed:
    reset: int  # CANCELLED rows removed
    started: int  # tasks that start now (the rest follow by the fan-in)


class Engine:
    def __init__(
        self,
        db: SqlEngine,
        publisher: Publisher,
        registry: HandlerRegistry,
        *,
        events_topic: str,
        worker_id: str,
        alerts_topic: str = "dagrelay-alerts",
        clock: Clock = utcnow,
        rng: random.Random | None = None,
        hooks: EngineHooks | None = None,
        item_reader: maps.ItemReader = maps.read_json_lines,
    ) -> None:
        self.db = db
        self.publisher = publisher
        self.registry = registry
        self.events_topic = events_topic
        self.alerts_topic = alerts_topic
        self.worker_id = worker_id
        self.clock = clock
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self.hooks = hooks or NO_HOOKS  # tests and the local stack install crash points
        self.outbox = OutboxRelay(db, publisher, clock)
        self.item_reader = item_reader  # a mapped task's gs:// list of items

    # -- start_batch / cancel_batch -------------------------------------------------------------

    def start_batch(self, msg: StartBatch, message_id: str | None = None) -> StartOutcome:
        extra = {"action": Action.START_BATCH, "pipeline": msg.pipeline, "batch_id": msg.batch_id}
        with self.db.begin() as conn:
            created = self.start_batch_in(conn, msg, self.clock(), message_id)
        if created is None:
            log.info("batch already exists: start_batch ignored", extra=extra)
            return StartOutcome(created=False, roots=0)
        self.publish(created.messages)
        log.info("batch started", extra={**extra, "roots": len(created.tasks)})
        if not created.messages:
            self.finish_batch(msg.pipeline, msg.batch_id)
        return StartOutcome(created=True, roots=len(created.tasks))

    def start_batch_in(
        self, conn: Connection, msg: StartBatch, now: datetime, message_id: str | None = None
    ) -> store.Created | None:
        """Create the batch in the caller's transaction (a schedule tick starts its batch in
        the transaction that advances the schedule). None if the batch exists. The caller
        publishes the messages after commit, and finishes the batch if there are none."""
        # The batch runs the pipeline's definition as it is now: its version, pinned in the
        # transaction that creates the batch.
        exists, version_id = store.pin_version(
            conn, pipeline=msg.pipeline, batch_id=msg.batch_id, now=now
        )
        if exists:
            return None
        tasks = [] if version_id is None else list(store.version_task_names(conn, version_id))
        refusal = admission.start_refusal(msg.pipeline, msg.start_task, tasks)
        if refusal is not None or version_id is None:  # no version: no tasks, refused
            raise BadMessage(refusal or f"unknown pipeline {msg.pipeline!r}")
        if msg.start_task is not None and store_maps.is_mapped(
            conn, version_id=version_id, task=msg.start_task
        ):
            raise BadMessage(
                f"start_task {msg.start_task!r} is mapped: its items come from its parent; "
                "start at the parent"
            )
        with tracing.batch_span(msg.pipeline, msg.batch_id, version=version_id) as context:
            created = store.start_batch(
                conn,
                pipeline=msg.pipeline,
                batch_id=msg.batch_id,
                version_id=version_id,
                params=msg.params,
                start_task=msg.start_task,
                triggered_by=msg.triggered_by or "message",
                message_id=message_id,
                topic=self.events_topic,
                now=now,
                trace_context=context,
            )
        if not created.batch_created:
            return None
        skipped = [
            store.Transition(t.task_id, t.status)
            for t in created.tasks
            if t.status != TaskStatus.NEW
        ]
        cascade = self._advance(conn, msg.pipeline, msg.batch_id, skipped, now)
        # The first messages carry the new trace as they are; the relay reads it from the batch
        # row for the others (and for these, if they are left to the sweeper).
        messages = [with_trace_context(m, context) for m in created.messages + cascade.messages]
        return store.Created(created.tasks, messages, True)

    def cancel_batch(self, msg: CancelBatch) -> cancelling.Cancelled | None:
        """RUNNING -> CANCELLING: waiting tasks and those never created become CANCELLED,
        running attempts finish (a failure is not retried), teardown tasks are spared and run
        once their parents are done; the last attempt to end makes the batch CANCELLED (at
        once if none runs or waits). None if the batch was not RUNNING."""
        extra = {"action": Action.CANCEL_BATCH, "pipeline": msg.pipeline, "batch_id": msg.batch_id}
        extra["triggered_by"] = msg.triggered_by or "unknown"
        now = self.clock()
        with self.db.begin() as conn:
            stopped = cancelling.cancel_batch(
                conn, pipeline=msg.pipeline, batch_id=msg.batch_id, now=now
            )
            if stopped is None:
                log.info("cancel ignored: the batch is not running", extra=extra)
                return None
            # The cancelled tasks are done for the fan-in: their teardown children start.
            cancelled = [store.Transition(t, TaskStatus.CANCELLED) for t in stopped.task_ids]
            teardowns = self._advance(conn, msg.pipeline, msg.batch_id, cancelled, now)
            # Waiting attempts (sensors) hold nothing: polled now, they end CANCELLED.
            wakes = signals.wake_batch_waiters(
                conn,
                pipeline=msg.pipeline,
                batch_id=msg.batch_id,
                topic=self.events_topic,
                now=now,
            )
            running, status = cancelling.settle(
                conn, pipeline=msg.pipeline, batch_id=msg.batch_id, now=now
            )
        self.publish([*teardowns.messages, *wakes])
        done = cancelling.Cancelled(running, stopped.waiting, stopped.never_started, status)
        log.warning(
            "batch %s: %d running tasks will finish; %d waiting and %d never-started tasks "
            "cancelled",
            done.status,
            done.running,
            done.waiting,
            done.never_started,
            extra={**extra, "status": done.status},
        )
        if done.running:
            self._stop_deferred(msg.pipeline, msg.batch_id)
        return done

    def _stop_deferred(self, pipeline: str, batch_id: str) -> None:
        """A cancel stops at once the deferred work of the batch's attempts whose handler has a
        ``cancel`` (through their poll, which sees the batch cancelled). A stop that fails here
        is done by the attempt's next poll, which is already in the outbox."""
        with self.db.begin() as conn:
            deferred = store.deferred_to_stop(conn, pipeline=pipeline, batch_id=batch_id)
        for task, attempt, handler in deferred:
            registration = self._registration(handler)
            if registration is None or registration.cancel is None:
                continue  # polled to its end, as before
            try:
                self.poll_task(PollTask(batch_id, task, attempt=attempt, pipeline=pipeline))
            except Exception:  # its next poll stops it; the others go on
                log.exception(
                    "could not stop deferred work at the cancel; its next poll will",
                    extra={"action": Action.CANCEL_BATCH, "batch_id": batch_id, "task": task},
                )

    def resume(self, msg: Resume) -> Resumed:
        """Run again what a cancel stopped in a CANCELLED batch (its CANCELLED rows, and tasks
        it has no row for), keeping every other row: the tasks whose parents' rows decide them
        start (or are decided UPSTREAM_FAILED/SKIPPED), the rest follow by the fan-in."""
        extra = {"action": Action.RESUME, "pipeline": msg.pipeline, "batch_id": msg.batch_id}
        extra["triggered_by"] = msg.triggered_by or "unknown"
        now = self.clock()
        with self.db.begin() as conn:
            status = cancelling.lock_batch(conn, pipeline=msg.pipeline, batch_id=msg.batch_id)
            if refusal := admission.resume_refusal(msg.pipeline, msg.batch_id, status):
                raise BadMessage(refusal)
            # Mapped tasks the cancel stopped midway: their groups open again with the items
            # that never ran (a group whose items had all ended is decided now).
            groups = store_maps.resume_groups(
                conn, pipeline=msg.pipeline, batch_id=msg.batch_id, topic=self.events_topic, now=now
            )
            reopened = list(groups.counters)
            removed = cancelling.resume_reset(
                conn, pipeline=msg.pipeline, batch_id=msg.batch_id, reopened=reopened
            )
            if removed is None:  # the batch row is locked and CANCELLED: cannot happen
                raise BadMessage(f"batch {msg.pipeline}/{msg.batch_id} changed; resume again")
            reset, task_ids = removed
            # A cancelled task counted as done in its children's fan-in: not any more.
            cancelling.recount_fanin(
                conn, pipeline=msg.pipeline, batch_id=msg.batch_id, task_ids=task_ids + reopened
            )
            created = cancelling.resume_start(
                conn, pipeline=msg.pipeline, batch_id=msg.batch_id, topic=self.events_topic, now=now
            )
            opened = self._open_groups(conn, created, now)  # mapped tasks decided RUN now
            decided = [
                store.Transition(t.task_id, t.status, t.root_cause_log_id)
                for t in created.tasks
                if t.status not in (TaskStatus.NEW, TaskStatus.PROCESSING)
            ]
            decided += opened.finished
            decided += maps.decide_reopened(
                conn, batch_id=msg.batch_id, groups=groups.counters, now=now
            )
            cascade = self._advance(conn, msg.pipeline, msg.batch_id, decided, now)
        made = [groups.created, created, opened.created, cascade]
        started = sum(t.status == TaskStatus.NEW for c in made for t in c.tasks)
        log.warning(
            "batch resumed: %d cancelled rows reset, %d tasks started", reset, started, extra=extra
        )
        self.publish([m for c in made for m in c.messages])
        if not started:
            self.finish_batch(msg.pipeline, msg.batch_id)
        return Resumed(reset=reset, started=started)

    def rerun(self, msg: Rerun) -> int:
        """Reset a task (and with ``downstream`` its descendants) in a batch and run it again,
        in the batch's version (with ``latest``, first moved to the pipeline's current version
        when ``dagrelay.engine.versions`` allows it); their attempts stay in the history and the
        batch resumes. Returns rows reset."""
        asked = {"action": Action.RERUN, "batch_id": msg.batch_id, "task": msg.task}
        log.info("rerun asked by %s", msg.triggered_by or "unknown", extra=asked)
        if msg.failed_items:
            if msg.latest:
                raise BadMessage("a rerun of failed items runs in the batch's version: no latest")
            return self.rerun_failed_items(msg.batch_id, msg.task, msg.pipeline)
        return self.rerun_tasks(
            msg.batch_id, [msg.task], msg.downstream, msg.pipeline, latest=msg.latest
        )

    def rerun_tasks(
        self,
        batch_id: str,
        tasks: Sequence[str],
        downstream: bool,
        pipeline: str | None = None,
        *,
        latest: bool = False,
    ) -> int:
        """Rerun several tasks of one batch in one transaction (no task starts before every
        reset is committed). Refuses while any task in scope is running, or if a task has not
        been started in the batch. A task below another one being rerun with its downstream is
        not started on its own: its parent's completion decides it again."""
        extra = {"action": Action.RERUN, "batch_id": batch_id, "tasks": list(tasks)}
        now = self.clock()
        with self.db.begin() as conn:
            pipeline = resolve_pipeline(conn, pipeline, batch_id, tasks[0], latest=latest)
            if latest:
                moves.move_to_latest(
                    conn,
                    pipeline=pipeline,
                    batch_id=batch_id,
                    tasks=tasks,
                    downstream=downstream,
                    now=now,
                )
            scope = store.rerun_scope(
                conn, pipeline=pipeline, batch_id=batch_id, tasks=tasks, downstream=downstream
            )
            targets = _rerun_targets(batch_id, tasks, pipeline, scope)
            reset = store.rerun_reset(
                conn, pipeline=pipeline, batch_id=batch_id, task_ids=[r.task_id for r in scope]
            )
            if reset != sum(row.log_id is not None for row in scope):
                # A task in scope was claimed after the scope was read: roll back, refuse.
                raise BadMessage("a task to rerun started meanwhile; wait for it and try again")
            messages: list[OutgoingMessage] = []
            for target in _topmost(targets, downstream, conn, batch_id):
                created = store.rerun_start(
                    conn,
                    pipeline=target.pipeline,
                    batch_id=batch_id,
                    task_id=target.task_id,
                    task=target.task,
                    topic=self.events_topic,
                    now=now,
                )
                if created is None:  # the batch's status changed under the lock: impossible
                    raise BadMessage(admission.not_rerunnable(target.pipeline, batch_id, None))
                opened = self._open_groups(conn, created, now)  # a mapped task: its instances
                closed = self._advance(conn, target.pipeline, batch_id, opened.finished, now)
                messages += created.messages + opened.created.messages + closed.messages
        log.warning(
            "rerun: %d task rows reset, batch resumed",
            reset,
            extra={**extra, "pipeline": targets[0].pipeline, "downstream": downstream},
        )
        self.publish(messages)
        return reset

    def rerun_failed_items(self, batch_id: str, task: str, pipeline: str | None = None) -> int:
        """Run the failed instances of a mapped task again (their attempts stay in the history):
        its group opens again, its descendants are reset, and the group decides once more when
        the instances end. Refused while anything in scope runs. Returns instances reset."""
        now = self.clock()
        with self.db.begin() as conn:
            pipeline = resolve_pipeline(conn, pipeline, batch_id, task)
            scope = store.rerun_scope(
                conn, pipeline=pipeline, batch_id=batch_id, tasks=[task], downstream=True
            )
            target = _rerun_targets(batch_id, [task], pipeline, scope)[0]
            below = [r.task_id for r in scope if r.task_id != target.task_id]
            store.rerun_reset(conn, pipeline=pipeline, batch_id=batch_id, task_ids=below)
            reopened, created = store_maps.reset_failed_items(
                conn,
                batch_id=batch_id,
                task_id=target.task_id,
                task=task,
                topic=self.events_topic,
                now=now,
            )
            if not reopened or not created.tasks:
                raise BadMessage(f"task {task!r} of batch {batch_id!r} has no failed items")
            store_maps.recount_children(
                conn, pipeline=pipeline, batch_id=batch_id, task_id=target.task_id
            )
            if not store_maps.resume_batch(conn, pipeline=pipeline, batch_id=batch_id):
                raise BadMessage(admission.not_rerunnable(pipeline, batch_id, None))
        log.warning(
            "rerun of %d failed items of %s",
            len(created.tasks),
            task,
            extra={
                "action": Action.RERUN,
                "batch_id": batch_id,
                "task": task,
                "pipeline": pipeline,
            },
        )
        self.publish(created.messages)
        return len(created.tasks)

    # -- run_task ------------------------------------------------------------------------------

    def run_task(self, msg: RunTask) -> RunOutcome:
        extra: dict[str, Any] = {
            "action": Action.RUN_TASK,
            "batch_id": msg.batch_id,
            "task": msg.task,
        }
        with self.db.begin() as conn:
            pipeline = resolve_pipeline(conn, msg.pipeline, msg.batch_id, msg.task)
            got = store.claim_or_queue(
                conn,
                pipeline=pipeline,
                batch_id=msg.batch_id,
                task=msg.task,
                now=self.clock(),
                worker=self.worker_id,
                map_index=-1 if msg.map_index is None else msg.map_index,
            )
            if got is None:
                return self._not_claimed(conn, replace(msg, pipeline=pipeline), extra)
            if got.claim is None:
                log.info("task queued: %d ahead in its pool", got.ahead, extra=extra)
                return RunOutcome.QUEUED
            claim = got.claim
        ref = claim.ref
        extra |= {"pipeline": ref.pipeline, "attempt": ref.attempt}
        with _attempt_span("attempt", claim) as span:
            log.info("task claimed", extra=extra)
            self.hooks.at(HookPoint.AFTER_CLAIM, ref.task)
            output, failure = self._execute(claim)
            self.hooks.at(HookPoint.AFTER_HANDLER, ref.task)
            outcome = self.conclude(ref, output, failure)
            span.end(outcome.value, failure.error if failure else None)
        return outcome

    def _not_claimed(self, conn: Connection, msg: RunTask, extra: dict[str, Any]) -> RunOutcome:
        pipeline = msg.pipeline or ""  # resolved by run_task
        index = -1 if msg.map_index is None else msg.map_index
        state = store.task_state(
            conn, pipeline=pipeline, batch_id=msg.batch_id, task=msg.task, map_index=index
        )
        if state is None:
            raise BadMessage(
                f"unknown task {msg.task!r}: batch {msg.pipeline}/{msg.batch_id} does not exist "
                "or its version has no such task"
            )
        if state.status is None:
            # A task of the batch's version without a row: a rerun --downstream reset it while
            # this (duplicated or redelivered) run_task was in flight, or its parents have not
            # ended yet. The engine sent it; its row's creation publishes a new one.
            log.info(
                "run_task ignored: task has no task_log row (not started, or reset by a rerun)",
                extra=extra,
            )
            return RunOutcome.IGNORED
        log.info(
            "run_task ignored: task is %s (attempt %s), batch is %s",
            state.status,
            state.attempt,
            state.batch_status,
            extra={**extra, "status": str(state.status)},
        )
        return RunOutcome.IGNORED

    def poll_task(self, msg: PollTask) -> RunOutcome:
        """Poll a deferred attempt's work (its handler's registered poll) and conclude it, or
        defer again. A poll for an attempt no longer deferred is acknowledged and ignored."""
        with self.db.begin() as conn:
            pipeline = resolve_pipeline(conn, msg.pipeline, msg.batch_id, msg.task)
            claim = store.deferred_attempt(
                conn,
                pipeline=pipeline,
                batch_id=msg.batch_id,
                task=msg.task,
                attempt=msg.attempt,
                poll_at=msg.poll_at,
            )
        if claim is None:
            log.info(
                "poll_task ignored: the attempt is not deferred, or not at this poll",
                extra={"action": Action.POLL_TASK, "batch_id": msg.batch_id, "task": msg.task},
            )
            return RunOutcome.IGNORED
        if not claim.live and claim.job is not None and WAITING_FOR in claim.job:
            # A cancelled batch's waiting attempt (a sensor) is not polled again: it ends.
            what = claim.job[WAITING_FOR]
            stop = WaitCancelled(f"cancelled while waiting for {what}")
            return self.conclude(claim.ref, None, _failure(stop))
        if not claim.live and (stopped := self._stop_cancelled(claim)) is not None:
            return stopped
        with _attempt_span("poll", claim) as span:
            output, failure = self._execute(claim)
            outcome = self.conclude(claim.ref, output, failure)
            span.end(outcome.value, failure.error if failure else None)
        return outcome

    # -- stopping deferred work (ARCHITECTURE.md, "Deferred work") -----------------------------

    def _stop_cancelled(self, claim: store.Claim) -> RunOutcome | None:
        """A deferred attempt of a cancelled batch: its handler's cancel stops the work and the
        attempt ends CANCELLED; a cancel that failed for now is called again at the next poll.
        None: the handler has no cancel, and its work is polled to its end."""
        registration = self._registration(claim.handler)
        if registration is None or registration.cancel is None:
            return None
        why = "its batch was cancelled"
        extra = {"action": Action.POLL_TASK, "batch_id": claim.ref.batch_id, "task": claim.ref.task}
        try:
            gave_up = self._call_cancel(claim, registration, why)
        except Exception as exc:  # noqa: BLE001 - tried again at the next poll
            log.warning("could not stop the deferred work yet: %s", exc, extra=extra)
            return self.conclude(claim.ref, Deferred(claim.job or {}, STOP_RETRY_S), None)
        if gave_up is None:
            error = f"cancelled: {why}; its work was stopped"
        else:
            error = f"cancelled: {why}; stopping its work failed for good: {gave_up}"
        return self.conclude(claim.ref, None, Failure(Stopped(error), error, ""))

    def stop_expired(self, ref: store.AttemptRef) -> str | None:
        """Before the sweeper concludes an expired lease: a deferred attempt's work is stopped
        by its handler's cancel (if it has one). Raises when stopping failed for now (the next
        sweep tries again); returns why it failed for good, else None."""
        with self.db.begin() as conn:
            claim = store.deferred_attempt(
                conn,
                pipeline=ref.pipeline,
                batch_id=ref.batch_id,
                task=ref.task,
                attempt=ref.attempt,
            )
        if claim is None:
            return None
        registration = self._registration(claim.handler)
        if registration is None or registration.cancel is None:
            return None
        return self._call_cancel(claim, registration, "its lease expired")

    def _call_cancel(self, claim: store.Claim, registration: Registration, why: str) -> str | None:
        """The handler's cancel of the attempt's job; why it can never work (a
        NonRetryableError, logged), or None once the work is stopped. Other errors raise."""
        ref = claim.ref
        extra: dict[str, Any] = {"action": "stop", "batch_id": ref.batch_id, "task": ref.task}
        extra |= {"pipeline": ref.pipeline, "attempt": ref.attempt}
        if registration.cancel is None or claim.job is None:
            return None
        try:
            registration.cancel(self._context(claim, registration), claim.job)
        except NonRetryableError as exc:
            log.error("deferred work could not be stopped (%s): %s", why, exc, extra=extra)  # noqa: TRY400 - the reason says it all
            return str(exc)
        log.warning("deferred work stopped: %s", why, extra=extra)
        return None

    def _registration(self, name: str) -> Registration | None:
        try:
            return self.registry.get(name)
        except Exception:  # noqa: BLE001 - an unknown handler is the poll's own error
            return None

    def signal(self, msg: Signal, message_id: str | None = None) -> int | None:
        """Record a signal once (its ``signal_id``, else the message id, deduplicates) and
        wake the attempts waiting for its key: a poll for each, now. The number woken; None
        for a duplicate (nothing written)."""
        extra = {"action": Action.SIGNAL, "key": msg.key}
        now = self.clock()
        with self.db.begin() as conn:
            recorded = signals.record(
                conn,
                key=msg.key,
                payload=msg.payload,
                dedupe_id=msg.signal_id or message_id,
                triggered_by=msg.triggered_by,
                now=now,
            )
            if recorded is None:
                log.info("duplicate signal ignored", extra=extra)
                return None
            wakes = signals.wake_signal_waiters(conn, key=msg.key, topic=self.events_topic, now=now)
        log.info("signal recorded; %d waiting sensors woken", len(wakes), extra=extra)
        self.publish(wakes)
        return len(wakes)

    def _execute(
        self, claim: store.Claim
    ) -> tuple[Mapping[str, Any] | Deferred | None, Failure | None]:
        """Run the handler, or its poll for a deferred attempt (``claim.job``). Never raises
        for a handler failure: that is the attempt's result."""
        ref = claim.ref
        try:
            registration = self.registry.get(claim.handler)
            context = self._context(claim, registration)
            self.hooks.at(HookPoint.IN_HANDLER, ref.task)
            result = _invoke(registration, context, claim.job)
            if isinstance(result, Deferred):
                maps.refuse_deferral(ref.map_index)
                return check_deferred(result, ref.task), None
            return check_output(result, ref.task), None
        except Exception as exc:  # noqa: BLE001 - any handler failure is the task's outcome
            return None, _failure(exc)

    def _context(self, claim: store.Claim, registration: Registration) -> HandlerContext[Any]:
        """What the handler (or its poll, or its cancel) receives: params resolved and parsed."""
        ref = claim.ref
        values = {**claim.batch_params, "batch_id": ref.batch_id, "pipeline": ref.pipeline}
        if ref.map_index >= 0:
            values |= maps.item_values(claim.item)
        resolved = {
            key: value
            if key in registration.raw_params
            else params_mod.resolve(value, values, f"params.{key}")
            for key, value in claim.params.items()
        }
        return HandlerContext(
            pipeline=ref.pipeline,
            batch_id=ref.batch_id,
            task=ref.task,
            attempt=ref.attempt,
            run_id=ref.log_id,
            params=registration.parse_params(resolved, ref.task),
            batch_params=claim.batch_params,
            parent_outputs=claim.parent_outputs,
            heartbeat=lambda: self.heartbeat(ref),
            item=claim.item,
            map_index=None if ref.map_index < 0 else ref.map_index,
            timeout_s=ref.timeout_s,
            clock=self.clock,
        )

    def heartbeat(self, ref: store.AttemptRef) -> bool:
        """Extend a running attempt's lease; False if the attempt is no longer live."""
        with self.db.begin() as conn:
            return store.extend_lease(conn, ref, self.clock()) is not None

    # -- concluding an attempt -----------------------------------------------------------------

    def conclude(
        self,
        ref: store.AttemptRef,
        output: Mapping[str, Any] | Deferred | None,
        failure: Failure | None,
        lease_before: datetime | None = None,
    ) -> RunOutcome:
        """Write an attempt's result (fenced by attempt), release or fail its children,
        publish. Used for handler results and, by the sweeper, for expired leases (with
        ``lease_before``: a lease a heartbeat renewed meanwhile is left alone)."""
        if isinstance(output, Deferred):
            return self._defer(ref, output)
        extra = {
            "action": "conclude",
            "pipeline": ref.pipeline,
            "batch_id": ref.batch_id,
            "task": ref.task,
            "attempt": ref.attempt,
        }

        try:
            concluded = retry_transient(lambda: self._write(ref, output, failure, lease_before))
        except (DBAPIError, UnicodeError) as exc:
            # A value the engine produced (an output, an error text, a child's items) that the
            # database refuses: the task ends ERROR with the reason, in a transaction of its
            # own; its message is not a bad one (ARCHITECTURE.md, "Messages").
            if (reason := refused_value(exc)) is None:
                raise
            log.error("the database refused the attempt's result: %s", reason, extra=extra)  # noqa: TRY400 - the reason says it all
            refusal = _refusal("the attempt's result", reason)
            concluded = retry_transient(lambda: self._write(ref, None, refusal, lease_before))
        if concluded is None:
            log.warning("late result rejected: the attempt is no longer live", extra=extra)
            return RunOutcome.IGNORED
        result, created = concluded
        _log_result(result, extra, _alerts(created.messages, self.alerts_topic))
        self.hooks.at(HookPoint.AFTER_COMMIT, ref.task)
        self.publish(created.messages)
        released = any(t.status == TaskStatus.NEW for t in created.tasks)
        if result.status != TaskStatus.RETRY and not released:  # CANCELLED: maybe the last
            self.finish_batch(ref.pipeline, ref.batch_id)
        return RunOutcome(result.status.value)

    def _write(
        self,
        ref: store.AttemptRef,
        output: Mapping[str, Any] | None,
        failure: Failure | None,
        lease_before: datetime | None,
    ) -> tuple[store.Result, store.Created] | None:
        """One transaction: the attempt's result (fenced), the parent transitions it feeds
        into the fan-in, its children, the waiters its slot releases. None: not written."""
        now = self.clock()
        result = self._result(ref, output, failure, now)
        with self.db.begin() as conn:
            written = store.finish_attempt(
                conn,
                ref=ref,
                result=result,
                topic=self.events_topic,
                alerts_topic=self.alerts_topic,
                now=now,
                lease_before=lease_before,
            )
            if written is None:
                return None
            # The status written may differ from the one asked (RETRY -> CANCELLED).
            result = replace(result, status=written.tasks[0].status)
            updates_assets = written.updates_assets
            finished = self._finished(conn, ref, result, now, written.batch_running)
            written = _with_messages(written, finished.messages)  # an item's alert
            if finished.transitions:
                children = self._advance(
                    conn, ref.pipeline, ref.batch_id, finished.transitions, now
                )
                written = store.Created(
                    written.tasks + children.tasks, written.messages + children.messages
                )
            succeeded = [t.task_id for t in finished.transitions if t.outcome == TaskStatus.SUCCESS]
            if updates_assets and succeeded:  # its assets' events, and the batches they start
                written = _with_messages(written, self._assets(conn, ref, succeeded, now))
            if ref.limited:  # last, so the pool's row is locked only until the commit
                written = _with_messages(written, self._release(conn, ref, now))
        return result, written

    def _assets(
        self, conn: Connection, ref: store.AttemptRef, task_ids: list[int], now: datetime
    ) -> list[OutgoingMessage]:
        """The events of the assets these tasks updated, and the batches they start
        (ARCHITECTURE.md, "Assets")."""
        return assets.on_success(
            conn,
            pipeline=ref.pipeline,
            batch_id=ref.batch_id,
            task_ids=task_ids,
            start=self.start_batch_in,
            now=now,
        )

    def _release(
        self, conn: Connection, ref: store.AttemptRef, now: datetime
    ) -> list[OutgoingMessage]:
        return store.release_slots(conn, log_id=ref.log_id, topic=self.events_topic, now=now)

    def _defer(self, ref: store.AttemptRef, deferred: Deferred) -> RunOutcome:
        extra = {"action": "defer", "batch_id": ref.batch_id, "task": ref.task}

        def transaction() -> store.Created | None:
            now = self.clock()
            with self.db.begin() as conn:
                return store.defer_attempt(
                    conn,
                    ref=ref,
                    job=deferred.job,
                    poll_at=now + timedelta(seconds=deferred.poll_after_s),
                    topic=self.events_topic,
                    now=now,
                )

        try:
            created = retry_transient(transaction)
        except (DBAPIError, UnicodeError) as exc:
            if (reason := refused_value(exc)) is None:
                raise
            log.error("the database refused the deferral: %s", reason, extra=extra)  # noqa: TRY400 - the reason says it all
            return self.conclude(ref, None, _refusal("the deferral's job", reason))
        if created is None:
            log.warning("deferral rejected: the attempt is no longer live", extra=extra)
            return RunOutcome.IGNORED
        log.info("task deferred; poll in %.0f s", deferred.poll_after_s, extra=extra)
        self.publish(created.messages)  # held until poll_at: the relay sends it then
        return RunOutcome.DEFERRED

    def _result(
        self,
        ref: store.AttemptRef,
        output: Mapping[str, Any] | None,
        failure: Failure | None,
        now: datetime,
    ) -> store.Result:
        if failure is None:
            return store.Result(TaskStatus.SUCCESS, output=output)
        reason = stored_error(escaped(str(failure.exception)))  # said as the handler put it
        if isinstance(failure.exception, Stopped):
            return store.Result(TaskStatus.CANCELLED, error=failure.error)
        if isinstance(failure.exception, WaitCancelled):
            return store.Result(TaskStatus.CANCELLED, error=reason)
        if isinstance(failure.exception, SkipTask) and ref.map_index < 0:
            return store.Result(TaskStatus.SKIPPED, error=reason)
        next_at = retry.next_attempt_at(ref.policy, ref.attempt, failure.exception, now, self.rng)
        return store.Result(
            TaskStatus.RETRY if next_at else TaskStatus.ERROR,
            error=failure.error,
            traceback=failure.traceback,
            next_attempt_at=next_at,
        )

    def _finished(
        self,
        conn: Connection,
        ref: store.AttemptRef,
        result: store.Result,
        now: datetime,
        batch_running: bool,
    ) -> maps.Counted:
        """The parent transitions an attempt's result feeds into the fan-in: its task's, or for
        an instance of a mapped task its group's, once the last instance ended (with the one
        alert of the item failure that exceeds its group's tolerance)."""
        status = result.status
        if status == TaskStatus.RETRY:
            return maps.Counted([], [])
        if ref.map_index >= 0:
            return maps.count_instance(
                conn,
                ref,
                result,
                alerts_topic=self.alerts_topic,
                now=now,
                batch_running=batch_running,
            )
        # CANCELLED (it failed while its batch was being cancelled) is done for the fan-in too:
        # in a CANCELLING batch only its teardown children are created.
        root = ref.log_id if status == TaskStatus.ERROR else None
        return maps.Counted([store.Transition(ref.task_id, status, root)], [])

    # -- fan-in / fan-out ----------------------------------------------------------------------

    def _advance(
        self,
        conn: Connection,
        pipeline: str,
        batch_id: str,
        finished: Sequence[store.Transition],
        now: datetime,
    ) -> store.Created:
        """check_and_trigger_children: one statement, whatever the number of parents or levels.
        Children that can never run (UPSTREAM_FAILED, SKIPPED) are terminal at birth; their own
        children are decided inside PostgreSQL, in the same transaction."""
        tasks: list[store.CreatedTask] = []
        messages: list[OutgoingMessage] = []
        while finished:
            created = store.advance_children(
                conn,
                pipeline=pipeline,
                batch_id=batch_id,
                finished=finished,
                topic=self.events_topic,
                now=now,
            )
            opened = self._open_groups(conn, created, now)
            tasks += created.tasks + opened.created.tasks
            messages += created.messages + opened.created.messages
            finished = opened.finished  # groups closed at birth (empty list, too many items)
        return store.Created(tasks, messages)

    def advance(
        self,
        conn: Connection,
        pipeline: str,
        batch_id: str,
        finished: Sequence[store.Transition],
        now: datetime,
    ) -> store.Created:
        """The fan-in step for tasks that ended outside an attempt of theirs (a waiting task
        failed by its deadline: dagrelay.engine.deadlines), in the caller's transaction."""
        return self._advance(conn, pipeline, batch_id, finished, now)

    def _open_groups(self, conn: Connection, created: store.Created, now: datetime) -> maps.Opened:
        """The instances of the mapped tasks among ``created`` (dagrelay.engine.maps)."""
        return maps.open_groups(
            conn,
            created,
            read=self.item_reader,
            topic=self.events_topic,
            alerts_topic=self.alerts_topic,
            now=now,
        )

    def finish_batch(self, pipeline: str, batch_id: str) -> None:
        def transaction() -> str | None:
            with self.db.begin() as conn:
                return store.finish_batch(
                    conn, pipeline=pipeline, batch_id=batch_id, now=self.clock()
                )

        status = retry_transient(transaction)  # a checked write: repeating it is harmless
        if status is not None:
            extra = {"action": "finish_batch", "pipeline": pipeline, "batch_id": batch_id}
            level = logging.ERROR if status == BatchStatus.FAILED else logging.INFO
            log.log(level, "batch %s", status, extra={**extra, "status": status})

    # -- outbox --------------------------------------------------------------------------------

    def publish(self, messages: Sequence[OutgoingMessage]) -> int:
        """Publish the messages that are due (after commit) through the outbox relay."""
        return self.outbox.send(messages)


def _attempt_span(kind: str, claim: store.Claim) -> AbstractContextManager[tracing.Attempt]:
    """The span of one attempt (``kind``: attempt, or poll of a deferred one)."""
    ref = claim.ref
    return tracing.attempt(
        f"{kind} {ref.task}" if ref.map_index < 0 else f"{kind} {ref.task}[{ref.map_index}]",
        task=ref.task,
        pipeline=ref.pipeline,
        batch=ref.batch_id,
        version=claim.version_id,
        attempt=ref.attempt,
        map_index=None if ref.map_index < 0 else ref.map_index,
    )


def _with_messages(created: store.Created, messages: list[OutgoingMessage]) -> store.Created:
    return replace(created, messages=created.messages + messages)


def _invoke(
    registration: Registration, context: HandlerContext, job: Mapping[str, Any] | None
) -> Any:
    """The handler for a fresh attempt; its poll for a deferred one."""
    if job is None:
        return registration.function(context)
    if registration.poll is None:
        raise NonRetryableError(f"handler {registration.name!r} deferred but has no poll")
    return registration.poll(context, job)


def _rerun_targets(
    batch_id: str, tasks: Sequence[str], pipeline: str | None, scope: Sequence[store.ScopeRow]
) -> list[store.ScopeRow]:
    """The rows of the tasks to rerun, once it is clear the rerun can go ahead."""
    batch_status = scope[0].batch_status if scope else None
    if batch_status is not None and batch_status not in RERUN_FROM:
        raise BadMessage(admission.not_rerunnable(scope[0].pipeline, batch_id, batch_status))
    by_name = {row.task: row for row in scope}
    targets: list[store.ScopeRow] = []
    for task in tasks:
        target = by_name.get(task)
        if target is None or (pipeline is not None and target.pipeline != pipeline):
            where = f" in pipeline {pipeline!r}" if pipeline else ""
            raise BadMessage(f"no batch {batch_id!r} with a task {task!r}{where}")
        if target.status is None:
            raise BadMessage(f"task {task!r} has not been started in batch {batch_id!r}")
        targets.append(target)
    if len({t.pipeline for t in targets}) > 1:
        raise BadMessage("a rerun's tasks must belong to one pipeline")
    running = sorted(row.task for row in scope if row.status == TaskStatus.PROCESSING)
    if running:
        raise BadMessage(admission.rerun_while_running(running))
    return targets


def _topmost(
    targets: Sequence[store.ScopeRow], downstream: bool, conn: Connection, batch_id: str
) -> list[store.ScopeRow]:
    """With downstream, a target that lies below another target is left to be decided by the
    fan-in (started on its own, it would run before its reset parent)."""
    if not downstream or len(targets) == 1:
        return list(targets)
    below = store.descendants(
        conn,
        pipeline=targets[0].pipeline,
        batch_id=batch_id,
        task_ids=[t.task_id for t in targets],
    )
    return [t for t in targets if t.task_id not in below]


def resolve_pipeline(
    conn: Connection, pipeline: str | None, batch_id: str, task: str, *, latest: bool = False
) -> str:
    """The pipeline a message is for: the one it names, or, for a message from an older sender
    that names none, the only pipeline with a batch ``batch_id`` whose version has ``task``
    (with ``latest``: the only one with such a batch, whatever its version)."""
    if pipeline is not None:
        return pipeline
    if latest:
        found = store_versions.batch_pipelines(conn, batch_id)
    else:
        found = store.task_pipelines(conn, batch_id=batch_id, task=task)
    if len(found) == 1:
        return found[0]
    if not found:
        raise BadMessage(f"unknown task {task!r}: no batch {batch_id!r} with a task {task!r}")
    raise BadMessage(
        f"the message names no pipeline and batch {batch_id!r} with task {task!r} exists in "
        f'pipelines {", ".join(found)}: send it again with "pipeline"'
    )


def _failure(exc: BaseException) -> Failure:
    """``error`` is what an operator reads (``Type: message``, no frames of the engine); the
    traceback, kept with the attempt, says where."""
    kind = "non-retryable " if isinstance(exc, NonRetryableError) else ""
    error = escaped(f"{kind}{type(exc).__name__}: {exc}")  # a NUL in a message is kept, escaped
    summary = escaped("".join(traceback.format_exception(exc, limit=-8)))
    return Failure(exc, stored_error(error), stored_error(summary, keep_end=True))


def _refusal(what: str, reason: str) -> Failure:
    """The failure of an attempt whose result the database refused: final, not retried."""
    error = escaped(f"{what} could not be stored: {reason}")
    return Failure(NonRetryableError(error), stored_error(error), "")


def _alerts(messages: Sequence[OutgoingMessage], topic: str) -> list[Mapping[str, Any]]:
    """The alerts among the messages a transaction wrote (each is one untolerated failure)."""
    return [m.payload for m in messages if m.topic == topic]


def _log_result(
    result: store.Result, extra: Mapping[str, Any], alerts: Sequence[Mapping[str, Any]] = ()
) -> None:
    for alert in alerts:
        # The alert's log line (the log-based alert counts these); its message is in the
        # outbox for the alerts topic. One per untolerated failure, whichever task it names.
        log.error(
            "task failed: %s",
            alert.get("error"),
            extra={
                **extra,
                "task": alert.get("task"),
                "batch_id": alert.get("batch_id"),
                "alert": "task_failed",
                "error": alert.get("error"),
                "root_cause": alert.get("root_cause"),
            },
        )
    if result.status == TaskStatus.ERROR:
        if not alerts:  # an item within its group's tolerance (or after the one alert)
            log.warning("item failed, recorded and not alerted: %s", result.error, extra=extra)
    elif result.status == TaskStatus.RETRY:
        log.warning(
            "task failed, retry at %s: %s",
            result.next_attempt_at,
            result.error,
            extra={**extra, "next_attempt_at": str(result.next_attempt_at)},
        )
    elif result.status == TaskStatus.CANCELLED:
        log.warning("task ended by its batch's cancel: %s", result.error, extra=extra)
    elif result.status == TaskStatus.SKIPPED:
        log.info("task skipped: %s", result.error, extra=extra)
    else:
        log.info("task succeeded", extra=extra)
