"""The rules of recurring schedules, pure (their tables of cases: ``tests/unit/test_ticks.py``);
the sweep that applies them is ``dagrelay.engine.schedules``, ``dagrelay schedule list`` shows
their ``waiting_runs`` without loading the engine.

``decide`` is pure: given a schedule row, the time and how many of the pipeline's batches are
RUNNING, it says which due ticks start and where ``next_run_at`` goes:

- ``next_run_at`` NULL (a new row, or its cron or zone changed): set to the first tick after
  now; nothing starts.
- the due ticks are those from ``next_run_at`` to now: the *runs*. ``catchup: latest`` keeps
  only the newest (older missed ticks are dropped); ``catchup: all`` keeps every one, up to the
  newest ``catchup_limit`` (the cap: older ones are dropped, and said so).
- runs start oldest first while fewer than ``max_active_batches`` of the pipeline's batches are
  RUNNING (whoever started them). A run that finds no free slot waits — ``next_run_at`` stays
  on it, so no later tick is started before it and the next sweep tries again — except under
  ``overlap: skip`` with ``catchup: latest``: there the one due tick is dropped. With
  ``catchup: all`` no run is ever dropped by a full pipeline: catch-up means every missed run
  happens, one slot at a time (Airflow's catch-up under ``max_active_runs``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from dagrelay.engine.ticks import Cron, Tick, batch_id


class Catchup(StrEnum):
    ALL = "all"  # every missed tick, up to catchup_limit (the newest ones)
    LATEST = "latest"  # only the newest missed tick


class Overlap(StrEnum):
    SKIP = "skip"  # a tick that finds max_active_batches running is dropped
    WAIT = "wait"  # it starts when a batch finishes


@dataclass(frozen=True)
class Schedule:
    pipeline: str
    cron: Cron
    batch_id_template: str
    catchup: Catchup = Catchup.LATEST
    catchup_limit: int = 10
    max_active_batches: int = 1
    overlap: Overlap = Overlap.SKIP
    paused: bool = False
    next_run_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Schedule:
        return cls(
            pipeline=row["pipeline"],
            cron=Cron(row["cron"], row["timezone"]),
            batch_id_template=row["batch_id_template"],
            catchup=Catchup(row["catchup"]),
            catchup_limit=row["catchup_limit"],
            max_active_batches=row["max_active_batches"],
            overlap=Overlap(row["overlap"]),
            paused=row["paused"],
            next_run_at=row["next_run_at"],
        )


@dataclass(frozen=True)
class Decision:
    start: tuple[Tick, ...]
    next_run_at: datetime
    dropped: tuple[Tick, ...] = ()  # due ticks that will never start (catchup latest, skip)
    waiting: tuple[Tick, ...] = ()  # due ticks waiting for a free slot, oldest first
    capped: bool = False  # older due ticks lay beyond catchup_limit: dropped


def decide(schedule: Schedule, now: datetime, running: int) -> Decision:
    cron = schedule.cron
    if schedule.next_run_at is None:
        return Decision((), cron.next_after(now))
    keep = schedule.catchup_limit if schedule.catchup == Catchup.ALL else 1
    due = cron.due(schedule.next_run_at, now, keep)
    capped = len(due) == keep and due[0].scheduled_for > schedule.next_run_at
    free = max(0, schedule.max_active_batches - running)
    start, rest = tuple(due[:free]), tuple(due[free:])
    if rest and (schedule.overlap == Overlap.WAIT or schedule.catchup == Catchup.ALL):
        return Decision(start, rest[0].scheduled_for, waiting=rest, capped=capped)
    return Decision(start, cron.next_after(now), dropped=rest, capped=capped)


def waiting_runs(schedule: Schedule, now: datetime) -> int:
    """How many runs of the schedule are due and not started at ``now`` (``schedule list``):
    the ticks from ``next_run_at`` to now, up to what catch-up keeps."""
    if schedule.next_run_at is None or schedule.next_run_at > now:
        return 0
    keep = schedule.catchup_limit if schedule.catchup == Catchup.ALL else 1
    return len(schedule.cron.due(schedule.next_run_at, now, keep))


def backfill_ticks(
    schedule: Schedule, first: date, last: date, limit: int
) -> list[tuple[str, Tick]]:
    """The ticks whose interval starts from ``first`` to ``last`` (the zone's days, both
    included), each with the batch id the schedule gives it: a backfill of a monthly schedule
    runs months, named as the schedule names them."""
    ticks = schedule.cron.ticks_starting(first, last, limit)
    return [(batch_id(schedule.batch_id_template, tick), tick) for tick in ticks]
