"""``dagrelay schedule list|pause|resume`` and ``backfill`` of a scheduled pipeline."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, event, text
from typer.testing import CliRunner, Result

from dagrelay import cli
from dagrelay.config import get_settings
from dagrelay.store.db import TransactionPool, get_engine

pytestmark = pytest.mark.integration

Run = Callable[..., Result]


def _reset() -> None:
    get_engine.cache_clear()
    get_settings.cache_clear()


@pytest.fixture
def run(db_url: str) -> Iterator[Run]:
    def invoke(*args: str) -> Result:
        _reset()
        try:
            return CliRunner().invoke(cli.app, list(args), env={"DATABASE_URL": db_url})
        finally:
            _reset()

    yield invoke
    _reset()


@pytest.fixture
def monthly(db: Engine, insert_pipeline: Callable[..., dict[str, int]]) -> None:
    insert_pipeline("monthly", {"report": []})
    with db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO schedules (pipeline, cron, timezone, batch_id_template, "
                "next_run_at, last_tick_at, last_batch_id) VALUES ('monthly', '0 6 1 * *', "
                "'Europe/Brussels', '{interval_start:%Y-%m}', '2024-05-01T04:00Z', "
                "'2024-04-01T04:00Z', '2024-03')"
            )
        )


@pytest.mark.usefixtures("monthly")
def test_list_shows_runs_in_the_schedules_zone_then_pause_and_resume(run: Run, db: Engine) -> None:
    listed = run("schedule", "list")
    assert listed.exit_code == 0, listed.output
    line = next(x for x in listed.stdout.splitlines() if "monthly" in x)
    for cell in ("0 6 1 * *", "Europe/Brussels", "2024-05-01 06:00 CEST", "2024-04-01 06:00"):
        assert cell in line
    assert "active" in line

    assert run("schedule", "pause", "monthly").stdout == "schedule monthly: paused\n"
    assert run("schedule", "pause", "monthly").stdout == "schedule monthly: already so\n"
    assert "paused" in run("schedule", "list").stdout
    assert run("schedule", "resume", "monthly").stdout == "schedule monthly: resumed\n"
    with db.connect() as conn:
        paused, next_run = conn.execute(text("SELECT paused, next_run_at FROM schedules")).one()
    assert (paused, next_run) == (False, None)  # the next sweep computes the next tick

    missing = run("schedule", "pause", "nope")
    assert missing.exit_code == 2
    assert "no schedule for pipeline 'nope'" in missing.output


@pytest.mark.usefixtures("monthly")
def test_backfill_walks_the_schedules_ticks(run: Run) -> None:
    result = run("backfill", "monthly", "--from", "2024-01-01", "--to", "2024-03-31", "--dry-run")
    assert result.exit_code == 0, result.output
    starts = [x.split()[1] for x in result.stdout.splitlines() if " start " in x]
    assert starts == ["2024-01", "2024-02", "2024-03"]  # the ids the schedule gives them
    assert result.stdout.splitlines()[-1] == "dry run: 3 of 3 days would run; nothing started"


def test_list_shows_the_policy_the_waiting_runs_and_a_schedules_error(
    run: Run, db: Engine, insert_pipeline: Callable[..., dict[str, int]]
) -> None:
    insert_pipeline("hourly", {"a": []})
    insert_pipeline("never", {"a": []})
    with db.begin() as conn:  # hourly: 3 runs due since 2024 (the cap); never: in error
        conn.execute(
            text(
                "INSERT INTO schedules (pipeline, cron, catchup, catchup_limit, next_run_at) "
                "VALUES ('hourly', '0 * * * *', 'all', 3, '2024-05-01T04:00Z')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO schedules (pipeline, cron, last_error) "
                "VALUES ('never', '0 0 31 2 *', 'cron ''0 0 31 2 *'' never fires')"
            )
        )
    listed = run("schedule", "list")
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    hourly = next(x for x in lines if "hourly" in x)
    assert "all<=3, max 1, wait" in hourly
    assert hourly.split("│")[-3].strip() == "3"  # waiting
    never = next(x for x in lines if "never" in x)
    assert "latest, max 1, skip" in never
    assert "error: cron '0 0 31 2 *' never fires" in never
    assert never.split("│")[-3].strip() == "0"  # next_run_at NULL: nothing due


@pytest.mark.parametrize(
    ("pipeline", "exit_code"), [("monthly", 0), ("nope", 2)], ids=["done", "refused"]
)
@pytest.mark.usefixtures("monthly")
def test_a_verb_closes_the_connections_it_opened(
    db_url: str, pipeline: str, exit_code: int
) -> None:
    """A verb run in-process (a test, a notebook) leaves no pool behind: the connections of
    the process-wide engine are closed when the verb ends, whether it succeeded or not, not
    when the garbage collector finds them during some later test (cli/app.py,
    ``reports_errors``)."""
    _reset()
    opened: list[object] = []
    closed: list[object] = []

    def on_connect(dbapi_connection: object, _record: object) -> None:
        opened.append(dbapi_connection)

    def on_close(dbapi_connection: object, _record: object) -> None:
        closed.append(dbapi_connection)

    event.listen(TransactionPool, "connect", on_connect)
    event.listen(TransactionPool, "close", on_close)
    try:
        result = CliRunner().invoke(
            cli.app, ["schedule", "pause", pipeline], env={"DATABASE_URL": db_url}
        )
    finally:
        event.remove(TransactionPool, "connect", on_connect)
        event.remove(TransactionPool, "close", on_close)
        _reset()
    assert result.exit_code == exit_code, result.output
    assert opened  # the verb did use the pool
    assert closed == opened
