"""The sweeper: the periodic repair of everything a crash, a lost message or a hung handler can
leave behind (the ``sweep`` action, from Cloud Scheduler every minute; a loop locally).

1. expired leases: the attempt is concluded as failed (retried or ERROR), fenced by attempt,
   so the zombie's late result is rejected;
2. outbox rows still unpublished (a crash after commit, a failed publish, a retry now due);
3. NEW or due RETRY tasks whose message was lost: a new run_task message; QUEUED tasks whose
   pool has free slots that nothing will release (the task released for them was cancelled);
4. RUNNING batches with nothing open: finished;
5. due schedule ticks: their batches started (``dagrelay.engine.schedules``);
6. deadlines missed: recorded with their one alert, and the tasks whose deadline says so
   failed (``dagrelay.engine.deadlines``).
Then it logs the operations metrics (``dagrelay.engine.metrics``).
Every step is idempotent; two sweeps at once take disjoint rows or write nothing twice.

Blast radius of one (ARCHITECTURE.md): each step runs whatever another one did, and inside a
step one row that cannot be repaired never stops the others. A repair that is one set-based
statement runs in a savepoint and, if it fails, again one row per savepoint; a repair per row
(a lease, a poll) is its own transaction. A row that fails is logged with its ids and its
error is stored on its task row (``task_log.error``, shown with the task), where the next
claim or result replaces it; a batch that cannot be finished is logged with its ids.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection

from dagrelay.engine import deadlines, metrics, schedules
from dagrelay.engine.core import Engine, Failure
from dagrelay.errors import LeaseExpired
from dagrelay.messages import PollTask
from dagrelay.states import Action, TaskStatus
from dagrelay.store import sweeps
from dagrelay.store import transitions as store
from dagrelay.store.db import error_text
from dagrelay.store.outbox import OutgoingMessage

log = logging.getLogger(__name__)

DEFAULT_OLDER_THAN_S = 30  # a message younger than this may still be on its way
BATCH_LIMIT = 500


@dataclass(frozen=True)
class SweepReport:
    expired: int = 0
    relayed: int = 0
    requeued: int = 0
    polled: int = 0
    batches_finished: int = 0
    ticks_started: int = 0
    deadlines_missed: int = 0

    def __str__(self) -> str:
        return (
            f"{self.expired} expired leases, {self.relayed} relayed, "
            f"{self.requeued} requeued, {self.polled} overdue polls, "
            f"{self.batches_finished} batches finished, "
            f"{self.ticks_started} scheduled batches started, "
            f"{self.deadlines_missed} deadlines missed"
        )


class Sweeper:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def sweep(self, older_than_s: int | None = None) -> SweepReport:
        age = DEFAULT_OLDER_THAN_S if older_than_s is None else older_than_s
        report = SweepReport(
            expired=self._step(self.expire_leases),
            relayed=self._step(lambda: self.relay_outbox(age)),
            requeued=self._step(lambda: self.requeue_stale(age))
            + self._step(lambda: self.release_stalled_queues(age)),
            polled=self._step(lambda: self.poll_overdue(2 * age)),
            batches_finished=self._step(lambda: self.finish_idle_batches(age)),
            ticks_started=self._step(lambda: schedules.start_due_ticks(self.engine)),
            deadlines_missed=self._step(self.check_deadlines),
        )
        log.info("sweep: %s", report, extra={"action": Action.SWEEP})
        self._step(lambda: metrics.report(self.engine.db, self.engine.clock()))
        return report

    @staticmethod
    def _step(step: Callable[[], int]) -> int:
        """Each repair runs whatever another one did: a failure is logged, the sweep goes on
        (and the next sweep tries again)."""
        try:
            return step()
        except Exception:
            log.exception("sweep step %s failed", getattr(step, "__name__", "step"))
            return 0

    def expire_leases(self) -> int:
        engine = self.engine
        now = engine.clock()
        with engine.db.begin() as conn:
            expired = store.expired_leases(conn, now=now, limit=BATCH_LIMIT)
        for ref in expired:
            exc = LeaseExpired(
                f"lease expired (timeout_s={ref.timeout_s}): the worker died or the handler hung"
            )
            detail = (
                f"LeaseExpired: attempt {ref.attempt} of {ref.task} in batch {ref.batch_id} "
                f"gave no result within its lease; concluded by the sweeper at {engine.clock()}"
            )
            try:
                # Deferred work is stopped first (its handler's cancel); a stop that failed for
                # now leaves the lease expired, and the next sweep tries again.
                if (gave_up := engine.stop_expired(ref)) is not None:
                    detail += f"; its work could not be stopped: {gave_up}"
                engine.conclude(
                    ref, None, Failure(exc, f"LeaseExpired: {exc}", detail), lease_before=now
                )
            except Exception as failed:  # noqa: BLE001 - recorded on the row; the others go on
                row = sweeps.TaskRow(
                    ref.log_id,
                    ref.pipeline,
                    ref.batch_id,
                    ref.task,
                    TaskStatus.PROCESSING,
                    ref.attempt,
                )
                self._record("conclude the expired lease", row, failed)
        return len(expired)

    def check_deadlines(self) -> int:
        return deadlines.check(self.engine).missed

    def relay_outbox(self, older_than_s: int) -> int:
        """Publish rows that have been due for ``older_than_s``; republishing is harmless."""
        cutoff = self.engine.clock() - timedelta(seconds=older_than_s)
        return self.engine.outbox.relay(cutoff=cutoff, limit=BATCH_LIMIT)

    def requeue_stale(self, older_than_s: int) -> int:
        engine = self.engine
        now = engine.clock()
        cutoff = now - timedelta(seconds=older_than_s)
        with engine.db.begin() as conn:
            stale = sweeps.stale_tasks(conn, cutoff=cutoff, now=now, limit=BATCH_LIMIT)
            messages = self._set_based(
                conn,
                "requeue the task",
                stale,
                lambda ids: sweeps.requeue_tasks(conn, ids, topic=engine.events_topic, now=now),
            )
        if messages:
            log.warning("requeued %d tasks whose message was lost", len(messages))
        engine.publish(messages)
        return len(messages)

    def release_stalled_queues(self, older_than_s: int) -> int:
        engine = self.engine
        now = engine.clock()
        with engine.db.begin() as conn:
            stalled = sweeps.stalled_queues(conn, cutoff=now - timedelta(seconds=older_than_s))
            messages = self._set_based(
                conn,
                "release its queue",
                stalled,
                lambda ids: sweeps.release_queues(conn, ids, topic=engine.events_topic, now=now),
            )
        if messages:
            log.warning("released %d queued tasks no slot end would have", len(messages))
        engine.publish(messages)
        return len(messages)

    def poll_overdue(self, older_than_s: int) -> int:
        """Deferred attempts whose poll is overdue by ``older_than_s`` (its message was lost,
        or the relay is behind): polled here. A duplicate poll is harmless (fenced writes)."""
        engine = self.engine
        cutoff = engine.clock() - timedelta(seconds=older_than_s)
        with engine.db.begin() as conn:
            overdue = store.overdue_polls(conn, cutoff=cutoff, limit=BATCH_LIMIT)
        for log_id, pipeline, batch_id, task, attempt in overdue:
            try:
                engine.poll_task(
                    PollTask(batch_id=batch_id, task=task, attempt=attempt, pipeline=pipeline)
                )
            except Exception as exc:  # noqa: BLE001 - recorded on the row; the others go on
                row = sweeps.TaskRow(
                    log_id, pipeline, batch_id, task, TaskStatus.PROCESSING, attempt
                )
                self._record("poll the deferred attempt", row, exc)
        return len(overdue)

    def finish_idle_batches(self, older_than_s: int) -> int:
        engine = self.engine
        now = engine.clock()
        cutoff = now - timedelta(seconds=older_than_s)
        with engine.db.begin() as conn:
            try:
                with conn.begin_nested():
                    finished = sweeps.finish_idle_batches(conn, cutoff=cutoff, now=now)
            except Exception:  # one batch may be the cause: one savepoint per batch
                log.exception("sweep: finishing idle batches failed; one batch at a time")
                finished = self._finish_one_by_one(conn, cutoff, now)
        for pipeline, batch_id, status in finished:
            log.warning(
                "sweep finished batch %s/%s: %s",
                pipeline,
                batch_id,
                status,
                extra={"action": Action.SWEEP, "pipeline": pipeline, "batch_id": batch_id},
            )
        return len(finished)

    def _finish_one_by_one(
        self, conn: Connection, cutoff: datetime, now: datetime
    ) -> list[tuple[str, str, str]]:
        finished = []
        for pipeline, batch_id in sweeps.idle_batch_candidates(conn, cutoff=cutoff):
            try:
                with conn.begin_nested():
                    status = store.finish_batch(conn, pipeline=pipeline, batch_id=batch_id, now=now)
            except Exception as exc:  # noqa: BLE001 - logged with its ids; the others go on
                log.error(  # noqa: TRY400 - the error text is the record, not a traceback
                    "sweep could not finish batch %s/%s: %s",
                    pipeline,
                    batch_id,
                    error_text(exc),
                    extra={"action": Action.SWEEP, "pipeline": pipeline, "batch_id": batch_id},
                )
                continue
            if status is not None:
                finished.append((pipeline, batch_id, status))
        return finished

    # -- blast radius of one -------------------------------------------------------------------

    def _set_based(
        self,
        conn: Connection,
        what: str,
        rows: list[sweeps.TaskRow],
        repair: Callable[[list[int]], list[OutgoingMessage]],
    ) -> list[OutgoingMessage]:
        """``repair`` of every row in one statement (a savepoint); if that fails, of one row at
        a time, each in its own savepoint: a row that fails gets its error and the rest go on."""
        if not rows:
            return []
        try:
            with conn.begin_nested():
                return repair([r.log_id for r in rows])
        except Exception:  # one row may be the cause
            log.exception("sweep: could not %s for %d rows; one row at a time", what, len(rows))
        messages: list[OutgoingMessage] = []
        for row in rows:
            try:
                with conn.begin_nested():
                    messages += repair([row.log_id])
            except Exception as exc:  # noqa: BLE001 - recorded on the row; the others go on
                self._log_failure(what, row, exc)
                sweeps.record_error(conn, row, f"sweep could not {what}: {error_text(exc)}")
        return messages

    def _record(self, what: str, row: sweeps.TaskRow, exc: BaseException) -> None:
        """A per-row repair failed: log it with the row's ids and store it on the row."""
        self._log_failure(what, row, exc)
        try:
            with self.engine.db.begin() as conn:
                sweeps.record_error(conn, row, f"sweep could not {what}: {error_text(exc)}")
        except Exception:  # the log line above is the record
            log.exception("sweep: could not record the error of task_log %d", row.log_id)

    @staticmethod
    def _log_failure(what: str, row: sweeps.TaskRow, exc: BaseException) -> None:
        log.error(
            "sweep could not %s: %s/%s %s (attempt %d): %s",
            what,
            row.pipeline,
            row.batch_id,
            row.task or f"task_log {row.log_id}",
            row.attempt,
            error_text(exc),
            exc_info=exc,
            extra={
                "action": Action.SWEEP,
                "pipeline": row.pipeline,
                "batch_id": row.batch_id,
                "task": row.task,
                "attempt": row.attempt,
                "log_id": row.log_id,
            },
        )
