"""Operating pipelines: backfill plans, what to rerun, a task's history. Pure functions over
plain data (tested with tables of cases); the reads that feed them are ``dagrelay.store.reads``
(a failure's root causes are part of its batch there). Nothing here changes state: the CLI
publishes messages or calls the engine for that."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from dagrelay.errors import DagrelayError
from dagrelay.states import BatchStatus, TaskStatus

MAX_BACKFILL_DAYS = 3660
REDO_STATUSES = frozenset({TaskStatus.ERROR, TaskStatus.UPSTREAM_FAILED, TaskStatus.CANCELLED})

# -- backfill ------------------------------------------------------------------------------------


class Reprocess(StrEnum):
    """Which dates that already have a batch a backfill runs again."""

    NONE = "none"  # only dates with no batch
    FAILED = "failed"  # also FAILED and CANCELLED batches
    ALL = "all"  # also SUCCESS batches


class Action(StrEnum):
    START = "start"  # publish start_batch
    RERUN_FAILED = "rerun failed"  # rerun the tasks that did not finish, with their downstream
    RERUN_ALL = "rerun all"  # rerun the batch's root tasks, with their downstream
    SKIP = "skip"


@dataclass(frozen=True)
class ScheduledRun:
    """A schedule tick a backfill runs: the batch id and params its schedule gives it."""

    batch_id: str
    params: Mapping[str, str]


@dataclass(frozen=True)
class PlannedBatch:
    day: date  # the day; with a schedule, the day its tick's interval starts
    existing: str | None  # the batch's status, None: no batch yet
    action: Action
    reason: str
    tick: ScheduledRun | None = None  # None: the day's batch

    @property
    def batch_id(self) -> str:
        return self.tick.batch_id if self.tick else self.day.isoformat()

    @property
    def params(self) -> dict[str, str]:
        return dict(self.tick.params) if self.tick else batch_params(self.day)


def backfill_dates(first: date, last: date) -> list[date]:
    """Every day from ``first`` to ``last``, both included."""
    if last < first:
        raise DagrelayError(f"--to {last} is before --from {first}")
    days = (last - first).days + 1
    if days > MAX_BACKFILL_DAYS:
        raise DagrelayError(f"{days} days is more than a backfill does ({MAX_BACKFILL_DAYS})")
    return [first + timedelta(days=n) for n in range(days)]


def batch_params(day: date) -> dict[str, str]:
    """The batch params of a backfilled day: ``date`` and ``ds`` (ISO), ``ds_nodash``."""
    return {"date": day.isoformat(), "ds": day.isoformat(), "ds_nodash": day.strftime("%Y%m%d")}


def plan_backfill(
    days: Sequence[date], existing: Mapping[str, str], reprocess: Reprocess
) -> list[PlannedBatch]:
    """What a backfill does for each day, given the status of the batches that exist (by
    batch id, the ISO date). A batch that succeeded is never run again unless asked
    (``Reprocess.ALL``); a RUNNING batch is always left alone."""
    return [_plan_day(day, existing.get(day.isoformat()), reprocess) for day in days]


def plan_ticks(
    ticks: Sequence[tuple[date, ScheduledRun]], existing: Mapping[str, str], reprocess: Reprocess
) -> list[PlannedBatch]:
    """``plan_backfill`` for a scheduled pipeline: one batch per tick, by its batch id."""
    return [
        replace(_plan_day(day, existing.get(run.batch_id), reprocess), tick=run)
        for day, run in ticks
    ]


def _plan_day(day: date, status: str | None, reprocess: Reprocess) -> PlannedBatch:
    if status is None:
        return PlannedBatch(day, None, Action.START, "no batch yet")
    if status == BatchStatus.RUNNING:
        return PlannedBatch(day, status, Action.SKIP, "running now")
    if status == BatchStatus.SUCCESS:
        if reprocess == Reprocess.ALL:
            return PlannedBatch(day, status, Action.RERUN_ALL, "--reprocess all")
        return PlannedBatch(day, status, Action.SKIP, "succeeded (--reprocess all to redo)")
    if reprocess in (Reprocess.FAILED, Reprocess.ALL):
        return PlannedBatch(day, status, Action.RERUN_FAILED, f"--reprocess {reprocess}")
    return PlannedBatch(day, status, Action.SKIP, f"{status.lower()} (--reprocess failed to redo)")


def in_flight(launched: Iterable[str], statuses: Mapping[str, str]) -> list[str]:
    """The launched batches still running; one whose start message has not been processed
    yet (no row) counts as running."""
    return [b for b in launched if statuses.get(b, BatchStatus.RUNNING) == BatchStatus.RUNNING]


def rerun_targets(
    rows: Mapping[str, str | None], parents: Mapping[str, Sequence[str]], *, everything: bool
) -> list[str]:
    """The tasks to rerun (each with its downstream) to run a finished batch again.

    ``rows``: every task of the pipeline with its status in the batch (None: no row).
    ``everything``: the batch's roots (tasks with a row and no parent with one), so the whole
    batch runs again. Otherwise the tasks that did not get done: ERROR, UPSTREAM_FAILED and
    CANCELLED rows, and for a task never created (its batch was cancelled before a parent
    finished) one parent of it. Candidates below another candidate are left out: rerunning
    the upper one resets them (and a rerun of a row already reset would be refused)."""
    if everything:
        candidates = {
            task
            for task, status in rows.items()
            if status is not None and not any(rows.get(p) for p in parents.get(task, ()))
        }
    else:
        candidates = {task for task, status in rows.items() if status in REDO_STATUSES}
        for task, status in rows.items():
            ups = sorted(parents.get(task, ()))
            if status is None and ups and all(rows.get(p) is not None for p in ups):
                candidates.add(ups[0])
    return sorted(c for c in candidates if not _ancestors(c, parents) & candidates)


def _ancestors(task: str, parents: Mapping[str, Sequence[str]]) -> set[str]:
    found: set[str] = set()
    stack = list(parents.get(task, ()))
    while stack:
        parent = stack.pop()
        if parent not in found:
            found.add(parent)
            stack.extend(parents.get(parent, ()))
    return found


# -- history -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttemptEntry:
    run: int  # 1 for the task's first run in the batch, 2 after its first rerun, ...
    attempt: int
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None  # None: still running (or its process died; the sweeper will say)
    error: str | None
    worker: str | None
    traceback: str | None
    current: bool  # belongs to the task's current row (False: a rerun replaced that row)


def number_runs(attempts: Sequence[Mapping[str, Any]]) -> list[AttemptEntry]:
    """Attempts oldest first, numbered by run: a rerun starts the attempt count again at 1
    (a new row), so an attempt number that does not grow starts a new run."""
    entries: list[AttemptEntry] = []
    run, previous = 0, None
    for row in attempts:
        if previous is None or row["attempt"] <= previous:
            run += 1
        previous = row["attempt"]
        entries.append(
            AttemptEntry(
                run=run,
                attempt=row["attempt"],
                started_at=row["started_at"],
                finished_at=row["finished_at"],
                outcome=row["outcome"],
                error=row["error"],
                worker=row["worker"],
                traceback=row["traceback"],
                current=bool(row["current"]),
            )
        )
    return entries
