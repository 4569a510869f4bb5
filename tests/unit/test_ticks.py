"""Schedule ticks and decisions: pure functions, tables of cases."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from dagrelay.engine.schedules import (
    Catchup,
    Overlap,
    Schedule,
    backfill_ticks,
    decide,
    waiting_runs,
)
from dagrelay.engine.ticks import Cron, NeverFires, ScheduleError, batch_id, check_template

BRUSSELS = "Europe/Brussels"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def walk(cron: Cron, start: datetime, count: int) -> list[str]:
    out, at = [], start
    for _ in range(count):
        at = cron.next_after(at)
        out.append(at.isoformat())
    return out


@pytest.mark.parametrize(
    ("expression", "start", "expected"),
    [
        # spring forward: 02:30 does not exist on 31 March 2024; it runs at 03:30 CEST
        ("30 2 * * *", utc(2024, 3, 30, 12),
         ["2024-03-31T03:30:00+02:00", "2024-04-01T02:30:00+02:00"]),
        # fall back: 02:30 happens twice on 27 October 2024; it runs once, the first time
        ("30 2 * * *", utc(2024, 10, 26, 12),
         ["2024-10-27T02:30:00+02:00", "2024-10-28T02:30:00+01:00"]),
        # hourly through the spring gap: the missing 02:30 and 03:30 are one tick
        ("30 * * * *", utc(2024, 3, 31, 0),
         ["2024-03-31T01:30:00+01:00", "2024-03-31T03:30:00+02:00", "2024-03-31T04:30:00+02:00"]),
        # hourly through the repeated hour: its wall times ran the first time
        ("30 * * * *", utc(2024, 10, 27, 0),
         ["2024-10-27T02:30:00+02:00", "2024-10-27T03:30:00+01:00"]),
    ],
)  # fmt: skip
def test_dst_in_brussels(expression: str, start: datetime, expected: list[str]) -> None:
    assert walk(Cron(expression, BRUSSELS), start, len(expected)) == expected


def test_a_monthly_tick_covers_the_month_before() -> None:
    cron = Cron("0 6 1 * *", BRUSSELS)
    tick = cron.tick(cron.last_at_or_before(utc(2024, 4, 10)))
    assert batch_id("{interval_start:%Y-%m}", tick) == "2024-03"
    assert tick.params() == {
        "scheduled_for": "2024-04-01T06:00:00+02:00",
        "interval_start": "2024-03-01T06:00:00+01:00",
        "interval_end": "2024-04-01T06:00:00+02:00",
        "ds": "2024-03-01",
    }


@pytest.mark.parametrize(
    ("expression", "zone", "message"),
    [
        ("* * * *", "Etc/UTC", "expected five fields"),
        ("* * * * * *", "Etc/UTC", "expected five fields"),
        ("61 * * * *", "Etc/UTC", "not a valid cron expression"),
        ("@fortnightly", "Etc/UTC", "unknown alias"),
        ("@daily", "Europe/Atlantis", "not an IANA time zone"),
    ],
)
def test_bad_cron_or_zone(expression: str, zone: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        Cron(expression, zone)


@pytest.mark.parametrize(
    "template", ["{ds}", "{scheduled_for.year}", "{interval_start!r}", "{scheduled_for[0]}", "{"]
)
def test_templates_take_only_the_tick_fields(template: str) -> None:
    with pytest.raises(ScheduleError, match="batch_id_template"):
        check_template(template)


def schedule(**fields: object) -> Schedule:
    values: dict[str, object] = {
        "pipeline": "p",
        "cron": Cron("0 * * * *", "Etc/UTC"),
        "batch_id_template": "{scheduled_for:%H}",
        "next_run_at": utc(2024, 3, 1, 1),
        **fields,
    }
    return Schedule(**values)  # type: ignore[arg-type]


def hours(decision_ticks: tuple[object, ...]) -> list[int]:
    return [t.scheduled_for.hour for t in decision_ticks]  # type: ignore[attr-defined]


NOW = utc(2024, 3, 1, 5, 30)  # ticks 01:00..05:00 are due


@pytest.mark.parametrize(
    ("fields", "running", "started", "next_hour", "dropped"),
    [
        ({}, 0, [5], 6, []),
        ({"catchup": Catchup.ALL, "max_active_batches": 10}, 0, [1, 2, 3, 4, 5], 6, []),
        ({"catchup": Catchup.ALL, "catchup_limit": 2, "max_active_batches": 10}, 0, [4, 5], 6, []),
        # catch-up runs wait for a slot, whatever overlap says (issue 18, bug 5)
        ({"catchup": Catchup.ALL, "max_active_batches": 3}, 1, [1, 2], 3, []),
        ({"catchup": Catchup.ALL}, 1, [], 1, []),
        ({}, 1, [], 6, [5]),  # catchup latest, overlap skip: the one due tick is dropped
        ({"catchup": Catchup.ALL, "max_active_batches": 3, "overlap": Overlap.WAIT}, 1,
         [1, 2], 3, []),
        ({"overlap": Overlap.WAIT}, 1, [], 5, []),
        ({"next_run_at": None}, 0, [], 6, []),
    ],
)  # fmt: skip
def test_decide(
    fields: dict[str, object], running: int, started: list[int], next_hour: int, dropped: list[int]
) -> None:
    decision = decide(schedule(**fields), NOW, running)
    assert hours(decision.start) == started
    assert decision.next_run_at.hour == next_hour
    assert hours(decision.dropped) == dropped


def test_decide_says_what_waits_and_what_the_cap_dropped() -> None:
    capped = decide(schedule(catchup=Catchup.ALL, catchup_limit=2), NOW, 0)
    assert (hours(capped.start), hours(capped.waiting), capped.capped) == ([4], [5], True)
    assert capped.next_run_at.hour == 5
    assert waiting_runs(schedule(catchup=Catchup.ALL), NOW) == 5
    assert waiting_runs(schedule(), NOW) == 1
    assert waiting_runs(schedule(next_run_at=None), NOW) == 0


def test_a_cron_that_never_fires_says_so() -> None:
    with pytest.raises(NeverFires, match="never fires"):
        Cron("0 0 31 2 *", "Etc/UTC").next_after(NOW)
    with pytest.raises(NeverFires):
        Cron("0 0 30 2 *", "Etc/UTC").due(NOW, NOW, 1)


def test_a_batch_id_with_a_final_newline_is_refused() -> None:
    tick = Cron("@daily", "Etc/UTC").tick(NOW.replace(hour=0, minute=0))
    with pytest.raises(ScheduleError, match="not a valid batch id"):
        batch_id("{scheduled_for:%Y-%m-%d}\n", tick)


def test_backfill_walks_months_named_like_the_schedule() -> None:
    monthly = schedule(cron=Cron("0 6 1 * *", BRUSSELS), batch_id_template="{interval_start:%Y-%m}")
    runs = backfill_ticks(monthly, date(2024, 1, 1), date(2024, 3, 31), 100)
    assert [name for name, _ in runs] == ["2024-01", "2024-02", "2024-03"]
    with pytest.raises(ScheduleError, match="more than 2 runs"):
        backfill_ticks(monthly, date(2024, 1, 1), date(2024, 3, 31), 2)
