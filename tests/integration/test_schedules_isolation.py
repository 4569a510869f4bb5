"""Blast radius of one schedule (issue 18, bug 3): a schedule that can never start a tick
records why on its own row (``last_error``) and every other schedule goes on. Each bad row sits
beside a ``* * * * *`` control that must start its batches; the clock is injected."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text

from dagrelay.engine import schedules
from dagrelay.engine.core import Engine as DagEngine
from dagrelay.engine.sweeper import Sweeper
from dagrelay.store import schedules as store
from tests.conftest import FakeClock

pytestmark = pytest.mark.integration

InsertPipeline = Callable[..., dict[str, int]]
CONTROL = "control"
BAD = "bad"  # sorts before the control: the loop meets it first


@pytest.fixture(autouse=True)
def pipelines(insert_pipeline: InsertPipeline) -> None:
    insert_pipeline(CONTROL, {"a": []})
    insert_pipeline(BAD, {"a": []})


def add_schedule(db: Engine, pipeline: str, cron: str, **columns: Any) -> None:
    """A schedule written with plain SQL, as a user would."""
    values = {"pipeline": pipeline, "cron": cron, **columns}
    names = ", ".join(values)
    binds = ", ".join(f":{k}" for k in values)
    with db.begin() as conn:
        conn.execute(text(f"INSERT INTO schedules ({names}) VALUES ({binds})"), values)


def row(db: Engine, pipeline: str) -> dict[str, Any]:
    with db.connect() as conn:
        found = conn.execute(text("SELECT * FROM schedules WHERE pipeline = :p"), {"p": pipeline})
        return dict(found.mappings().one())


def batch_ids(db: Engine, pipeline: str) -> list[str]:
    with db.connect() as conn:
        found = conn.execute(
            text("SELECT batch_id FROM batches WHERE pipeline = :p ORDER BY batch_id"),
            {"p": pipeline},
        )
        return list(found.scalars())


def sweep_minutes(engine: DagEngine, clock: FakeClock, minutes: int) -> None:
    """One sweep now and one after each of the next ``minutes`` minutes."""
    Sweeper(engine).sweep()
    for _ in range(minutes):
        clock.advance(60)
        Sweeper(engine).sweep()


def test_a_cron_that_never_fires_stops_only_itself(
    engine: DagEngine, db: Engine, clock: FakeClock
) -> None:
    add_schedule(db, BAD, "0 0 31 2 *")  # 31 February
    add_schedule(db, CONTROL, "* * * * *", max_active_batches=10)

    sweep_minutes(engine, clock, 3)

    assert batch_ids(db, CONTROL) == ["2024-03-01T00:01", "2024-03-01T00:02", "2024-03-01T00:03"]
    bad = row(db, BAD)
    assert bad["next_run_at"] is None
    assert "never fires" in bad["last_error"]
    assert row(db, CONTROL)["last_error"] is None
    assert batch_ids(db, BAD) == []


def test_a_schedule_in_error_is_read_after_the_healthy_ones(
    engine: DagEngine, db: Engine, clock: FakeClock
) -> None:
    add_schedule(db, BAD, "0 0 31 2 *")
    add_schedule(db, CONTROL, "* * * * *", next_run_at=clock.now)
    sweep_minutes(engine, clock, 0)
    assert row(db, BAD)["last_error"]

    clock.advance(60)
    with db.connect() as conn:  # one due schedule a sweep: the healthy one is taken
        assert store.due(conn, now=clock.now, limit=1) == [CONTROL]
    with db.begin() as conn:  # fixing the cron with SQL makes it healthy again
        conn.execute(
            text("UPDATE schedules SET cron = '0 0 * * *' WHERE pipeline = :p"), {"p": BAD}
        )
    Sweeper(engine).sweep()
    fixed = row(db, BAD)
    assert fixed["last_error"] is None
    assert fixed["next_run_at"] == clock.now.replace(minute=0) + timedelta(days=1)


def test_a_batch_id_the_database_refuses_stops_only_its_schedule(
    engine: DagEngine, db: Engine, clock: FakeClock
) -> None:
    # A trailing newline passes Python's `$` but not the batches CHECK.
    add_schedule(
        db,
        BAD,
        "* * * * *",
        batch_id_template="{scheduled_for:%Y-%m-%dT%H:%M}\n",
        next_run_at=clock.now - timedelta(minutes=1),  # due first
    )
    add_schedule(db, CONTROL, "* * * * *", max_active_batches=10, next_run_at=clock.now)

    sweep_minutes(engine, clock, 2)

    assert batch_ids(db, CONTROL) == ["2024-03-01T00:00", "2024-03-01T00:01", "2024-03-01T00:02"]
    bad = row(db, BAD)
    assert "not a valid batch id" in bad["last_error"]
    assert bad["next_run_at"] == clock.now - timedelta(minutes=3)  # the tick stays due
    assert batch_ids(db, BAD) == []


@pytest.mark.fresh_db  # it adds a trigger of its own
def test_any_error_of_the_database_stops_only_its_schedule(
    engine: DagEngine, db: Engine, clock: FakeClock
) -> None:
    """A refusal the engine cannot foresee (here a trigger): stored, bounded, on its row."""
    with db.begin() as conn:
        conn.execute(
            text(
                "CREATE FUNCTION refuse_bad() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "RAISE EXCEPTION 'refused by a test: %', repeat('x', 10000); END $$"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER refuse_bad BEFORE INSERT ON batches FOR EACH ROW "
                "WHEN (NEW.pipeline = 'bad') EXECUTE FUNCTION refuse_bad()"
            )
        )
    add_schedule(db, BAD, "* * * * *", next_run_at=clock.now - timedelta(minutes=1))
    add_schedule(db, CONTROL, "* * * * *", max_active_batches=10, next_run_at=clock.now)

    sweep_minutes(engine, clock, 1)

    assert batch_ids(db, CONTROL) == ["2024-03-01T00:00", "2024-03-01T00:01"]
    error = row(db, BAD)["last_error"]
    assert "refused by a test" in error
    assert len(error) <= schedules.MAX_ERROR_CHARS
    assert batch_ids(db, BAD) == []
