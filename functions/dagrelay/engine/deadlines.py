"""Deadlines, the sweeper's step (ARCHITECTURE.md, "Deadlines"): every deadline missed is
recorded once with its one alert (one statement: ``record_deadline_misses``), then each task
whose deadline says ``fail`` ends ERROR — a running attempt is concluded (fenced by attempt,
not retried; the handler's late result is rejected), a waiting one ends in a checked write —
with the failure's alert and its children's fan-in, as any failure.

Taking a failure is a checked write of its own (``deadline_misses.failed_at``), so a task is
failed by its deadline at most once: a rerun of it later runs."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from dagrelay.engine.core import Engine, Failure, RunOutcome
from dagrelay.errors import NonRetryableError
from dagrelay.states import Action, TaskStatus
from dagrelay.store import deadlines as store_deadlines
from dagrelay.store import transitions as store

log = logging.getLogger(__name__)

FAIL_LIMIT = 100  # failures taken per sweep; the rest wait for the next one
WAITING = (TaskStatus.NEW, TaskStatus.QUEUED, TaskStatus.RETRY)


class DeadlineMissed(NonRetryableError):
    """A task's deadline passed and it says ``fail``: the task ends ERROR, not retried."""


@dataclass(frozen=True)
class Checked:
    missed: int
    failed: int


def check(engine: Engine) -> Checked:
    now = engine.clock()
    with engine.db.begin() as conn:
        recorded = store_deadlines.record_misses(conn, alerts_topic=engine.alerts_topic, now=now)
    for miss in recorded.misses:
        state = (
            f"ended at {miss.ended_at.isoformat()}" if miss.ended_at else "not finished when seen"
        )
        log.warning(
            "deadline missed: %s was to finish by %s (%s)",
            miss.what,
            miss.deadline_at.isoformat(),
            state,
            extra={
                "action": Action.SWEEP,
                "alert": "deadline_missed",
                "pipeline": miss.pipeline,
                "batch_id": miss.batch_id,
                "task": miss.task or None,
            },
        )
    engine.publish(recorded.messages)
    failed = 0
    for _ in range(FAIL_LIMIT):
        with engine.db.begin() as conn:
            failing = store_deadlines.take_failure(conn, now=engine.clock())
        if failing is None:
            break
        failed += _fail(engine, failing)
    return Checked(len(recorded.misses), failed)


def _fail(engine: Engine, failing: store_deadlines.Failing) -> int:
    """End the task of a missed deadline ERROR; 1 if it was, 0 if it had ended or cannot be."""
    ref = failing.ref
    if ref is None or failing.mapped or not failing.batch_running:
        # No row yet (its parents still run: it is failed by nothing, its deadline alert was
        # raised), a mapped task (its items run on their own), or a batch no longer running.
        log.info("deadline fail: nothing to end for %s", failing.miss)
        return 0
    error = failing.error
    if failing.status == TaskStatus.PROCESSING:
        outcome = engine.conclude(ref, None, Failure(DeadlineMissed(error), error, error))
        return int(outcome == RunOutcome.ERROR)
    if failing.status not in WAITING:
        return 0  # it ended meanwhile
    now = engine.clock()
    with engine.db.begin() as conn:
        created = store_deadlines.fail_waiting(
            conn, ref=ref, error=error, alerts_topic=engine.alerts_topic, now=now
        )
        if created is None:
            return 0
        failed = [store.Transition(ref.task_id, TaskStatus.ERROR, ref.log_id)]
        children = engine.advance(conn, ref.pipeline, ref.batch_id, failed, now)
    log.error(
        "task failed by its deadline: %s",
        error,
        extra={"action": Action.SWEEP, "batch_id": ref.batch_id, "task": ref.task},
    )
    engine.publish(created.messages + children.messages)
    if not any(t.status == TaskStatus.NEW for t in children.tasks):
        engine.finish_batch(ref.pipeline, ref.batch_id)
    return 1
