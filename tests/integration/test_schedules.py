"""Schedules on the real PostgreSQL, driven by the sweep with an injected clock: each tick
starts one batch, whatever races, repeats, outages, overlaps and DST transitions happen."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.engine.sweeper import Sweeper
from dagrelay.store.outbox import InMemoryPublisher
from tests.conftest import FakeClock
from tests.integration.helpers import drive, run_together

pytestmark = pytest.mark.integration

InsertPipeline = Callable[..., dict[str, int]]
PIPELINE = "sched"


@pytest.fixture
def pipeline(insert_pipeline: InsertPipeline) -> str:
    insert_pipeline(PIPELINE, {"extract": [], "load": ["extract"]})
    return PIPELINE


def add_schedule(db: Engine, cron: str, **columns: Any) -> None:
    """A schedule written with plain SQL, as a user would."""
    values = {"pipeline": PIPELINE, "cron": cron, **columns}
    names = ", ".join(values)
    binds = ", ".join(f":{k}" for k in values)
    with db.begin() as conn:
        conn.execute(text(f"INSERT INTO schedules ({names}) VALUES ({binds})"), values)


def batches(db: Engine) -> list[dict[str, Any]]:
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT batch_id, params, triggered_by, status FROM batches "
                "WHERE pipeline = :p ORDER BY params->>'scheduled_for'"
            ),
            {"p": PIPELINE},
        ).mappings()
        return [dict(r) for r in rows]


def batch_ids(db: Engine) -> list[str]:
    return [b["batch_id"] for b in batches(db)]


def schedule(db: Engine) -> dict[str, Any]:
    with db.connect() as conn:
        row = conn.execute(text("SELECT * FROM schedules WHERE pipeline = :p"), {"p": PIPELINE})
        return dict(row.mappings().one())


def sweep(engine: DagEngine) -> int:
    return Sweeper(engine).sweep().ticks_started


def at(clock: FakeClock, when: datetime) -> None:
    clock.now = when


@pytest.mark.usefixtures("pipeline")
def test_a_new_schedule_gets_its_next_tick_then_starts_it_with_the_tick_as_params(
    engine: DagEngine, db: Engine, clock: FakeClock
) -> None:
    add_schedule(db, "0 6 1 * *", timezone="Europe/Brussels")
    at(clock, datetime(2024, 3, 15, tzinfo=UTC))

    assert sweep(engine) == 0  # next_run_at was NULL: computed, nothing started
    assert schedule(db)["next_run_at"] == datetime(2024, 4, 1, 4, tzinfo=UTC)  # 06:00 CEST

    at(clock, datetime(2024, 4, 1, 4, 0, 30, tzinfo=UTC))
    assert sweep(engine) == 1
    [batch] = batches(db)
    assert batch["batch_id"] == "2024-04-01T06:00"  # the default template, in the zone
    assert batch["triggered_by"] == f"schedule:{PIPELINE}"
    assert batch["params"] == {
        "scheduled_for": "2024-04-01T06:00:00+02:00",
        "interval_start": "2024-03-01T06:00:00+01:00",
        "interval_end": "2024-04-01T06:00:00+02:00",
        "ds": "2024-03-01",
    }
    row = schedule(db)
    assert row["next_run_at"] == datetime(2024, 5, 1, 4, tzinfo=UTC)
    assert row["last_tick_at"] == datetime(2024, 4, 1, 4, tzinfo=UTC)
    assert row["last_run_at"] == clock.now
    assert row["last_batch_id"] == batch["batch_id"]


@pytest.mark.usefixtures("pipeline")
def test_two_sweepers_racing_start_each_tick_once(
    engine: DagEngine, db: Engine, clock: FakeClock
) -> None:
    add_schedule(db, "* * * * *", max_active_batches=100)
    sweep(engine)  # computes the first tick
    reported = []
    for _ in range(10):
        clock.advance(60)
        reported += run_together([lambda: sweep(engine), lambda: sweep(engine)])

    assert len(batch_ids(db)) == 10
    assert sum(reported) == 10  # each tick reported by exactly one of the two sweepers
    assert sorted(reported).count(0) == 10
    assert schedule(db)["next_run_at"] == clock.now + timedelta(minutes=1)


@pytest.mark.usefixtures("pipeline")
def test_a_redelivered_sweep_starts_nothing_twice(
    engine: DagEngine, db: Engine, clock: FakeClock, publisher: InMemoryPublisher
) -> None:
    add_schedule(db, "*/5 * * * *", next_run_at=clock.now)
    assert sweep(engine) == 1
    first = publisher.drain("dagrelay-events")
    assert sweep(engine) == 0  # the same sweep message, delivered again at the same time
    assert sweep(engine) == 0
    assert batch_ids(db) == ["2024-03-01T00:00"]
    assert [m.payload["task"] for m in first] == ["extract"]
    assert publisher.drain("dagrelay-events") == []


@pytest.mark.usefixtures("pipeline")
@pytest.mark.parametrize(
    ("catchup", "started"),
    [
        ("latest", ["2024-03-02T05:00"]),
        ("all", ["2024-03-02T01:00", "2024-03-02T02:00", "2024-03-02T03:00",
                 "2024-03-02T04:00", "2024-03-02T05:00"]),
    ],
)  # fmt: skip
def test_catch_up_after_an_outage(
    engine: DagEngine, db: Engine, clock: FakeClock, catchup: str, started: list[str]
) -> None:
    add_schedule(
        db,
        "0 * * * *",
        catchup=catchup,
        catchup_limit=5,
        max_active_batches=10,
        next_run_at=datetime(2024, 3, 1, 1, tzinfo=UTC),
    )
    at(clock, datetime(2024, 3, 2, 5, 30, tzinfo=UTC))  # 29 hourly sweeps were lost

    assert sweep(engine) == len(started)
    assert batch_ids(db) == started  # the newest ticks, up to the cap
    assert schedule(db)["next_run_at"] == datetime(2024, 3, 2, 6, tzinfo=UTC)
    assert sweep(engine) == 0


def finish_running(engine: DagEngine, publisher: InMemoryPublisher, db: Engine) -> None:
    drive(engine, publisher)
    assert all(b["status"] == "SUCCESS" for b in batches(db))


@pytest.mark.usefixtures("pipeline")
def test_overlap_skip_drops_the_ticks_that_come_due_while_max_active_batches_run(
    engine: DagEngine, db: Engine, clock: FakeClock, publisher: InMemoryPublisher
) -> None:
    add_schedule(db, "* * * * *", overlap="skip", next_run_at=clock.now)
    assert sweep(engine) == 1  # 00:00 starts and keeps running (no task is run)
    for _ in range(3):  # the sweeps of 00:01..00:03, on time: each tick finds 00:00 running
        clock.advance(60)
        assert sweep(engine) == 0
    assert schedule(db)["next_run_at"] == datetime(2024, 3, 1, 0, 4, tzinfo=UTC)

    finish_running(engine, publisher, db)
    clock.advance(60)
    assert sweep(engine) == 1
    assert batch_ids(db) == ["2024-03-01T00:00", "2024-03-01T00:04"]


def running(db: Engine) -> int:
    return sum(b["status"] == "RUNNING" for b in batches(db))


@pytest.mark.usefixtures("pipeline")
def test_catch_up_all_runs_every_missed_tick_one_at_a_time_each_once(
    engine: DagEngine, db: Engine, clock: FakeClock, publisher: InMemoryPublisher
) -> None:
    """Issue 18, bug 5: the defaults (max_active_batches 1, overlap skip) with catchup all
    started 1 of 3 missed ticks and dropped the others."""
    add_schedule(db, "0 * * * *", catchup="all", next_run_at=datetime(2024, 3, 1, 1, tzinfo=UTC))
    at(clock, datetime(2024, 3, 1, 3, 30, tzinfo=UTC))  # the sweeps of 01:00..03:00 were lost

    started = []
    for _ in range(5):
        started += run_together([lambda: sweep(engine), lambda: sweep(engine)])  # duplicates
        assert running(db) <= 1
        drive(engine, publisher)
        clock.advance(60)

    assert batch_ids(db) == ["2024-03-01T01:00", "2024-03-01T02:00", "2024-03-01T03:00"]
    assert sum(started) == 3  # each tick started exactly once
    assert all(b["status"] == "SUCCESS" for b in batches(db))
    row = schedule(db)
    assert row["next_run_at"] == datetime(2024, 3, 1, 4, tzinfo=UTC)
    assert row["last_error"] is None


@pytest.mark.usefixtures("pipeline")
def test_overlap_wait_starts_the_waiting_ticks_as_batches_finish(
    engine: DagEngine, db: Engine, clock: FakeClock, publisher: InMemoryPublisher
) -> None:
    add_schedule(
        db, "* * * * *", catchup="all", overlap="wait", max_active_batches=2, next_run_at=clock.now
    )
    clock.advance(60)
    assert sweep(engine) == 2  # 00:00 and 00:01: two slots
    clock.advance(2 * 60)
    assert sweep(engine) == 0  # 00:02 and 00:03 wait
    assert schedule(db)["next_run_at"] == datetime(2024, 3, 1, 0, 2, tzinfo=UTC)

    finish_running(engine, publisher, db)
    assert sweep(engine) == 2
    assert batch_ids(db) == [f"2024-03-01T00:0{m}" for m in range(4)]
    assert schedule(db)["next_run_at"] == datetime(2024, 3, 1, 0, 4, tzinfo=UTC)
    assert sweep(engine) == 0  # both slots taken again, and nothing else is due


def sweep_every(engine: DagEngine, clock: FakeClock, start: datetime, end: datetime) -> int:
    """A sweep every 5 minutes from start to end (inclusive)."""
    at(clock, start)
    started = 0
    while clock.now <= end:
        started += sweep(engine)
        clock.advance(5 * 60)
    return started


@pytest.mark.usefixtures("pipeline")
@pytest.mark.parametrize(
    ("first_day", "expected"),
    [
        pytest.param(
            datetime(2024, 3, 30, 12, tzinfo=UTC),
            ["2024-03-31T03:30:00+02:00", "2024-04-01T02:30:00+02:00"],  # 02:30 does not exist
            id="spring-forward",
        ),
        pytest.param(
            datetime(2024, 10, 26, 12, tzinfo=UTC),
            ["2024-10-27T02:30:00+02:00", "2024-10-28T02:30:00+01:00"],  # 02:30 happens twice
            id="fall-back",
        ),
    ],
)
def test_dst_nights_in_brussels_run_the_0230_tick_once(
    engine: DagEngine, db: Engine, clock: FakeClock, first_day: datetime, expected: list[str]
) -> None:
    add_schedule(db, "30 2 * * *", timezone="Europe/Brussels", max_active_batches=5)
    started = sweep_every(engine, clock, first_day, first_day + timedelta(days=2))
    assert started == 2
    assert [b["params"]["scheduled_for"] for b in batches(db)] == expected
    assert batch_ids(db) == [e[:16] for e in expected]


@pytest.mark.usefixtures("pipeline")
def test_a_paused_schedule_starts_nothing_and_resumes_from_the_next_tick(
    engine: DagEngine, db: Engine, clock: FakeClock
) -> None:
    add_schedule(db, "* * * * *", paused=True, next_run_at=clock.now)
    clock.advance(10 * 60)
    assert sweep(engine) == 0
    assert batch_ids(db) == []
    assert schedule(db)["next_run_at"] == datetime(2024, 3, 1, tzinfo=UTC)  # untouched

    with db.begin() as conn:  # what `dagrelay schedule resume` runs
        conn.execute(text("UPDATE schedules SET paused = false, next_run_at = NULL"))
    assert sweep(engine) == 0  # the ticks missed while paused are not started
    clock.advance(60)
    assert sweep(engine) == 1
    assert batch_ids(db) == ["2024-03-01T00:11"]


@pytest.mark.usefixtures("pipeline")
def test_a_tick_that_cannot_start_stays_due_and_says_why(
    engine: DagEngine, db: Engine, clock: FakeClock
) -> None:
    add_schedule(db, "* * * * *", batch_id_template="run {ds}", next_run_at=clock.now)
    assert sweep(engine) == 0
    row = schedule(db)
    assert "unknown field {ds}" in row["last_error"]
    assert row["next_run_at"] == clock.now

    with db.begin() as conn:
        conn.execute(text("UPDATE schedules SET batch_id_template = 'run-{scheduled_for:%H%M}'"))
    assert sweep(engine) == 1
    assert batch_ids(db) == ["run-0000"]
    assert schedule(db)["last_error"] is None


def test_the_database_refuses_bad_rows_by_name(db: Engine) -> None:
    cases: dict[str, dict[str, Any]] = {
        "schedules_timezone_known": {"cron": "* * * * *", "timezone": "Europe/Atlantis"},
        "schedules_cron_five_fields": {"cron": "* * * *"},
        "schedules_catchup_valid": {"cron": "* * * * *", "catchup": "some"},
        "schedules_overlap_valid": {"cron": "* * * * *", "overlap": "queue"},
        "schedules_max_active_positive": {"cron": "* * * * *", "max_active_batches": 0},
    }
    for constraint, columns in cases.items():
        with pytest.raises(DBAPIError, match=constraint):
            add_schedule(db, **columns)


@pytest.mark.usefixtures("pipeline")
def test_changing_the_cron_with_sql_recomputes_the_next_tick(
    engine: DagEngine, db: Engine, clock: FakeClock
) -> None:
    add_schedule(db, "0 0 1 * *")
    sweep(engine)
    assert schedule(db)["next_run_at"] == datetime(2024, 4, 1, tzinfo=UTC)
    with db.begin() as conn:
        conn.execute(text("UPDATE schedules SET cron = '0 12 * * *'"))
    assert schedule(db)["next_run_at"] is None
    sweep(engine)
    assert schedule(db)["next_run_at"] == datetime(2024, 3, 1, 12, tzinfo=UTC)
