"""The sweeper: the periodic repair of everything a crash, a lost message or a hung handler can
leave behind (the ``sweep`` action, from Cloud Scheduler every minute; a loop locally).

1. expired leases: the attempt is concluded as failed (retried or ERROR), fenced by attempt,
   so the zombie's late result is rejected;
2. outbox rows still unpublished (a crash after commit, a failed publish, a retry now due);
3. NEW or due RETRY tasks whose message was lost: a new run_task message; QUEUED tasks whose
   pool has free slots that nothing will release (the task released for them was cancelled);
4. RUNNING batches with nothing open: finished;
5. due schedule ticks: their batches started (``dagrelay.engine.schedules``).
Every step is idempotent; two sweeps at once take disjoint rows or write nothing twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from dagrelay.engine import schedules
from dagrelay.engine.core import Engine, Failure
from dagrelay.errors import LeaseExpired
from dagrelay.messages import PollTask
from dagrelay.states import Action
from dagrelay.store import transitions as store

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

    def __str__(self) -> str:
        return (
            f"{self.expired} expired leases, {self.relayed} relayed, "
            f"{self.requeued} requeued, {self.polled} overdue polls, "
            f"{self.batches_finished} batches finished, "
            f"{self.ticks_started} scheduled batches started"
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
        )
        log.info("sweep: %s", report, extra={"action": Action.SWEEP})
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
                engine.conclude(
                    ref, None, Failure(exc, f"LeaseExpired: {exc}", detail), lease_before=now
                )
            except Exception:  # one stuck attempt must not stop the sweep for every batch
                log.exception("sweep: expiring %s/%s failed", ref.batch_id, ref.task)
        return len(expired)

    def relay_outbox(self, older_than_s: int) -> int:
        """Publish rows that have been due for ``older_than_s``; republishing is harmless."""
        cutoff = self.engine.clock() - timedelta(seconds=older_than_s)
        return self.engine.outbox.relay(cutoff=cutoff, limit=BATCH_LIMIT)

    def requeue_stale(self, older_than_s: int) -> int:
        engine = self.engine
        now = engine.clock()
        with engine.db.begin() as conn:
            messages = store.requeue_stale(
                conn,
                cutoff=now - timedelta(seconds=older_than_s),
                topic=engine.events_topic,
                now=now,
                limit=BATCH_LIMIT,
            )
        if messages:
            log.warning("requeued %d tasks whose message was lost", len(messages))
        engine.publish(messages)
        return len(messages)

    def release_stalled_queues(self, older_than_s: int) -> int:
        engine = self.engine
        now = engine.clock()
        with engine.db.begin() as conn:
            messages = store.release_stalled_queues(
                conn,
                cutoff=now - timedelta(seconds=older_than_s),
                topic=engine.events_topic,
                now=now,
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
        for pipeline, batch_id, task, attempt in overdue:
            try:
                engine.poll_task(
                    PollTask(batch_id=batch_id, task=task, attempt=attempt, pipeline=pipeline)
                )
            except Exception:  # one stuck poll must not stop the sweep for every batch
                log.exception("sweep: polling %s/%s failed", batch_id, task)
        return len(overdue)

    def finish_idle_batches(self, older_than_s: int) -> int:
        engine = self.engine
        now = engine.clock()
        with engine.db.begin() as conn:
            finished = store.finish_idle_batches(
                conn, cutoff=now - timedelta(seconds=older_than_s), now=now
            )
        for pipeline, batch_id, status in finished:
            log.warning(
                "sweep finished batch %s/%s: %s",
                pipeline,
                batch_id,
                status,
                extra={"action": Action.SWEEP, "pipeline": pipeline, "batch_id": batch_id},
            )
        return len(finished)
