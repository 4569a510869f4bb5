"""Schedule ticks: when a cron expression fires in a time zone, and what each run gets.

Pure functions over ``croniter`` and ``zoneinfo``; no I/O. A cron expression is read on the
zone's wall clock, and every tick is one instant:

- a wall time that does not exist (spring-forward: 02:30 on the last Sunday of March in
  Europe/Brussels) fires at the same instant one hour later, 03:30 summer time; if the
  expression also fires at 03:30 that day, that is the same tick, started once;
- a wall time that happens twice (fall-back: 02:30 on the last Sunday of October) fires once,
  at its first occurrence (summer time, 00:30 UTC). Schedules that fire several times an hour
  therefore do not fire during the repeated hour: its wall times have already fired.

A tick's interval runs from the tick before it to the tick itself: the run at 1 April 06:00 of
``0 6 1 * *`` covers March, so ``{interval_start:%Y-%m}`` names it ``2024-03``.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from dagrelay.errors import DagrelayError

ALIASES = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)
TEMPLATE_FIELDS = ("scheduled_for", "interval_start", "interval_end")
BATCH_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:=+-]{0,127}$")  # batches CHECK
MAX_STEPS = 100_000  # guards the walks against an expression that never fires


class ScheduleError(DagrelayError):
    """A schedule that cannot be evaluated (bad cron, unknown zone, bad template)."""


class NeverFires(ScheduleError):
    """A valid cron expression that names no instant (``0 0 31 2 *``): the schedule can never
    start a tick until its cron or zone changes."""


@dataclass(frozen=True)
class Tick:
    """One run of a schedule: ``scheduled_for`` is also the end of its interval. Times are
    aware, in the schedule's zone."""

    scheduled_for: datetime
    interval_start: datetime

    @property
    def interval_end(self) -> datetime:
        return self.scheduled_for

    def params(self) -> dict[str, str]:
        """The batch params of the tick's batch (ISO 8601 with the zone's offset)."""
        return {
            "scheduled_for": self.scheduled_for.isoformat(),
            "interval_start": self.interval_start.isoformat(),
            "interval_end": self.interval_end.isoformat(),
            "ds": self.interval_start.date().isoformat(),
        }


@dataclass(frozen=True)
class Cron:
    """A five-field cron expression (or an @alias) read on the wall clock of ``timezone``."""

    expression: str
    timezone: str

    def __post_init__(self) -> None:
        check_cron(self.expression)
        zone(self.timezone)

    @property
    def zone(self) -> ZoneInfo:
        return zone(self.timezone)

    def next_after(self, instant: datetime) -> datetime:
        """The first tick strictly after ``instant``."""
        return next(t for t in self._walk(instant, forward=True) if t > instant)

    def last_at_or_before(self, instant: datetime) -> datetime:
        """The latest tick at or before ``instant``."""
        wall = _wall(instant, self.zone).replace(second=0, microsecond=0) + timedelta(minutes=1)
        return next(t for t in self._walk_from(wall, forward=False) if t <= instant)

    def previous(self, tick: datetime) -> datetime:
        """The tick before ``tick`` (the start of its interval)."""
        return next(t for t in self._walk(tick, forward=False) if t < tick)

    def tick(self, scheduled_for: datetime) -> Tick:
        local = scheduled_for.astimezone(self.zone)
        return Tick(local, self.previous(local))

    def due(self, first: datetime, now: datetime, keep: int) -> list[Tick]:
        """The ticks from ``first`` to ``now`` (both included), oldest first; only the newest
        ``keep`` of them when there are more."""
        found: list[datetime] = []
        at = now
        while len(found) < keep:
            tick = self.last_at_or_before(at)
            if tick < first:
                break
            found.append(tick)
            at = tick - timedelta(microseconds=1)
        return [self.tick(t) for t in reversed(found)]

    def ticks_starting(self, first: date, last: date, limit: int) -> list[Tick]:
        """The ticks whose interval starts on a day from ``first`` to ``last`` (both included,
        on the zone's calendar): what a backfill of those days runs."""
        begin = datetime.combine(first, time(), self.zone)
        end = datetime.combine(last + timedelta(days=1), time(), self.zone)
        ticks: list[Tick] = []
        start = self.next_after(begin - timedelta(microseconds=1))
        while start < end:
            if len(ticks) == limit:
                raise ScheduleError(f"more than {limit} runs from {first} to {last}")
            following = self.next_after(start)
            ticks.append(Tick(following, start))
            start = following
        return ticks

    def _walk(self, instant: datetime, *, forward: bool) -> Iterator[datetime]:
        return self._walk_from(_wall(instant, self.zone), forward=forward)

    def _walk_from(self, wall: datetime, *, forward: bool) -> Iterator[datetime]:
        """Ticks as aware instants, from a naive wall time onwards (or backwards)."""
        it = croniter(self.expression, wall)
        for _ in range(MAX_STEPS):
            try:
                naive = it.get_next(datetime) if forward else it.get_prev(datetime)
            except CroniterError as exc:  # croniter gives up after decades without a match
                raise NeverFires(f"cron {self.expression!r} never fires ({exc})") from exc
            # fold=0: a repeated wall time is its first occurrence; a missing one is read with
            # the offset before the gap, i.e. it lands one gap later.
            yield naive.replace(tzinfo=self.zone).astimezone(UTC).astimezone(self.zone)
        raise NeverFires(f"cron {self.expression!r} found no tick in {MAX_STEPS} steps")


def _wall(instant: datetime, tz: ZoneInfo) -> datetime:
    if instant.tzinfo is None:
        raise ValueError("a naive datetime is not an instant")
    return instant.astimezone(tz).replace(tzinfo=None)


def check_cron(expression: str) -> None:
    text = expression.strip()
    if text.startswith("@"):
        if text not in ALIASES:
            raise ScheduleError(f"cron {expression!r}: unknown alias (one of {sorted(ALIASES)})")
        return
    if len(text.split()) != 5:
        raise ScheduleError(
            f"cron {expression!r}: expected five fields (minute hour day month weekday)"
        )
    if not croniter.is_valid(text):
        raise ScheduleError(f"cron {expression!r} is not a valid cron expression")


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(f"timezone {name!r} is not an IANA time zone") from exc


def check_template(template: str) -> None:
    """Only ``{scheduled_for...}``, ``{interval_start...}``, ``{interval_end...}`` fields
    with an optional strftime format: no attribute or index access."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ScheduleError(f"batch_id_template {template!r}: {exc}") from exc
    for _, name, _, conversion in parsed:
        if name is not None and (name not in TEMPLATE_FIELDS or conversion):
            raise ScheduleError(
                f"batch_id_template {template!r}: unknown field {{{name}}} "
                f"(use {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)})"
            )


def batch_id(template: str, tick: Tick) -> str:
    """The tick's batch id; ``ScheduleError`` if it is not a valid batch id."""
    check_template(template)
    values = {
        "scheduled_for": tick.scheduled_for,
        "interval_start": tick.interval_start,
        "interval_end": tick.interval_end,
    }
    rendered = template.format_map(values)
    if not BATCH_ID_PATTERN.fullmatch(rendered):  # match's $ would accept a final newline
        raise ScheduleError(
            f"batch_id_template {template!r} gives {rendered!r}, not a valid batch id "
            "(letters, digits and _ . : = + -, at most 128)"
        )
    return rendered


def check_distinct_ids(cron: Cron, template: str, start: datetime, count: int = 3) -> None:
    """``ScheduleError`` if consecutive ticks after ``start`` get the same batch id (a later
    tick would find its batch already there and start nothing)."""
    at, ids = start, []
    for _ in range(count + 1):
        at = cron.next_after(at)
        tick = cron.tick(at)
        ids.append((batch_id(template, tick), tick.scheduled_for))
    for (first, when), (second, then) in pairwise(ids):
        if first == second:
            raise ScheduleError(
                f"batch_id_template {template!r} gives {first!r} to the ticks at "
                f"{when.isoformat()} and {then.isoformat()}: include finer fields"
            )
