"""Assets on the real database: a task's success records an event per asset it updates, and an
asset schedule starts exactly one batch once every asset it waits for was updated — under
duplicate deliveries and upstream completions at the same instant — with the events recorded
as its trigger (ARCHITECTURE.md, "Assets")."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine, text
from typer.testing import CliRunner, Result

from dagrelay import cli
from dagrelay.config import get_settings
from dagrelay.engine.core import Engine as DagEngine
from dagrelay.errors import PipelineError
from dagrelay.messages import Envelope, RunTask, StartBatch, parse
from dagrelay.pipelines.apply import apply
from dagrelay.pipelines.export import export_yaml, read_pipeline
from dagrelay.pipelines.spec import load_pipeline
from dagrelay.store.db import get_engine
from dagrelay.store.outbox import InMemoryPublisher
from tests.integration.helpers import EVENTS_TOPIC, run_together, scalar

pytestmark = pytest.mark.integration

SALES, EXPENSES = "bq://finance.sales", "bq://finance.expenses"


def define(db: Engine, template: str = "assets-{n}", *, since: int = 0) -> None:
    """Two upstream pipelines (one task each, updating one asset) and a downstream pipeline
    waiting for both, all in plain SQL."""
    with db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tasks (name, pipeline, handler, updates) VALUES "
                "('sales.load', 'sales', 'python.noop', ARRAY[:s]), "
                "('expenses.load', 'expenses', 'python.noop', ARRAY[:e]), "
                "('profit.report', 'profit', 'python.noop', '{}')"
            ),
            {"s": SALES, "e": EXPENSES},
        )
        conn.execute(
            text(
                "INSERT INTO asset_schedules (pipeline, assets, batch_id_template, since_event_id) "
                "VALUES ('profit', ARRAY[:s, :e], :t, :since)"
            ),
            {"s": SALES, "e": EXPENSES, "t": template, "since": since},
        )


def deliver(engine: DagEngine, publisher: InMemoryPublisher, *, copies: int = 1) -> None:
    """Deliver every published message (start_batch and run_task, ``copies`` times each, as the
    router parses them) until nothing is left."""
    for _ in range(1000):
        sent = publisher.drain(EVENTS_TOPIC)
        if not sent:
            return
        for message in sent:
            data = base64.b64encode(message.data()).decode()
            parsed = parse(Envelope(data, dict(message.attributes), f"m-{message.outbox_id}"))
            for _ in range(copies):
                if isinstance(parsed, StartBatch):
                    engine.start_batch(parsed)
                else:
                    assert isinstance(parsed, RunTask), parsed
                    engine.run_task(parsed)
    raise AssertionError("the messages do not converge")


def start(engine: DagEngine, pipeline: str, batch_id: str, **params: Any) -> None:
    engine.start_batch(StartBatch(pipeline, batch_id, params=params))


def downstream(db: Engine) -> list[dict[str, Any]]:
    """The downstream batches with the events recorded as their trigger."""
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT b.batch_id, b.status::text AS status, b.triggered_by, b.params, "
                "       (SELECT array_agg(e.asset || '@' || e.batch_id "
                "                         ORDER BY e.asset, e.batch_id) "
                "        FROM asset_triggers c JOIN asset_events e USING (event_id) "
                "        WHERE c.pipeline = b.pipeline AND c.batch_id = b.batch_id) AS trigger "
                "FROM batches b WHERE b.pipeline = 'profit' ORDER BY b.batch_id"
            )
        ).mappings()
        return [dict(r) for r in rows]


def test_both_assets_updated_start_one_batch_with_both_as_its_trigger(
    engine: DagEngine, publisher: InMemoryPublisher, db: Engine
) -> None:
    define(db)
    start(engine, "sales", "s1")
    deliver(engine, publisher)
    assert downstream(db) == []  # only one of the two assets
    start(engine, "sales", "s2")  # sales again: both of its events go with expenses'
    start(engine, "expenses", "e1")
    deliver(engine, publisher)
    (batch,) = downstream(db)
    assert batch["batch_id"] == "assets-1"
    assert batch["status"] == "SUCCESS"
    assert batch["trigger"] == [f"{EXPENSES}@e1", f"{SALES}@s1", f"{SALES}@s2"]
    assert {(e["pipeline"], e["batch_id"]) for e in batch["params"]["asset_events"]} == {
        ("sales", "s1"),
        ("sales", "s2"),
        ("expenses", "e1"),
    }
    assert batch["triggered_by"] == f"assets: {EXPENSES}, {SALES}"
    start(engine, "expenses", "e2")  # a new round starts empty
    deliver(engine, publisher)
    assert len(downstream(db)) == 1
    assert scalar(db, "SELECT runs FROM asset_schedules WHERE pipeline = 'profit'") == 1


def test_duplicate_deliveries_record_each_event_once_and_start_one_batch(
    engine: DagEngine, publisher: InMemoryPublisher, db: Engine
) -> None:
    define(db)
    start(engine, "sales", "s1")
    start(engine, "expenses", "e1")
    deliver(engine, publisher, copies=3)
    assert scalar(db, "SELECT count(*) FROM asset_events") == 2
    assert [b["batch_id"] for b in downstream(db)] == ["assets-1"]
    assert scalar(db, "SELECT count(*) FROM asset_triggers") == 2
    # the batch was created in the transaction of the completion that completed its assets
    assert scalar(db, "SELECT triggered_by FROM batches WHERE pipeline = 'profit'").startswith(
        "assets: "
    )


def test_a_partition_whose_batch_exists_consumes_its_events_and_starts_nothing(
    engine: DagEngine, publisher: InMemoryPublisher, db: Engine
) -> None:
    define(db, "{partition}")
    start(engine, "profit", "2024-03")  # by hand, before the files
    start(engine, "sales", "s03", asset_partition="2024-03")
    start(engine, "expenses", "e03", asset_partition="2024-03")
    deliver(engine, publisher)
    (batch,) = downstream(db)
    assert batch["triggered_by"] == "message"
    assert scalar(db, "SELECT count(*) FROM asset_triggers") == 2


ROUNDS = 15


def test_upstream_batches_finishing_at_the_same_instant_start_exactly_one_batch(
    engine: DagEngine, publisher: InMemoryPublisher, db: Engine
) -> None:
    """Each round, the two upstream tasks complete in two threads released together (several
    copies of each run_task, too): exactly one downstream batch per round, never zero."""
    define(db, "{partition}")
    for round_ in range(ROUNDS):
        month = f"2024-{round_ + 1:02d}"
        start(engine, "sales", f"s{round_}", asset_partition=month)
        start(engine, "expenses", f"e{round_}", asset_partition=month)
        runs = publisher.drain(EVENTS_TOPIC)
        tasks = [
            RunTask(m.payload["batch_id"], m.payload["task"], m.payload["pipeline"]) for m in runs
        ]
        workers: list[Callable[[], object]] = [
            partial(engine.run_task, t) for t in tasks for _ in range(2)
        ]
        run_together(workers)
        deliver(engine, publisher)
        assert [b["batch_id"] for b in downstream(db)][-1] == month
        assert len(downstream(db)) == round_ + 1, f"round {round_}"
    batches = downstream(db)
    assert all(len(b["trigger"]) == 2 and b["status"] == "SUCCESS" for b in batches)
    assert scalar(db, "SELECT count(*) FROM asset_triggers") == 2 * ROUNDS


def test_partitions_wait_for_their_own_events(
    engine: DagEngine, publisher: InMemoryPublisher, db: Engine
) -> None:
    define(db, "{partition}")
    start(engine, "sales", "s03", asset_partition="2024-03")
    start(engine, "expenses", "e04", asset_partition="2024-04")
    deliver(engine, publisher)
    assert downstream(db) == []
    start(engine, "expenses", "e03", asset_partition="2024-03")
    deliver(engine, publisher)
    (batch,) = downstream(db)
    assert batch["batch_id"] == "2024-03"
    assert batch["params"]["asset_partition"] == "2024-03"
    assert batch["trigger"] == [f"{EXPENSES}@e03", f"{SALES}@s03"]


def test_a_template_without_a_partition_records_its_error_and_keeps_the_events(
    engine: DagEngine, publisher: InMemoryPublisher, db: Engine
) -> None:
    define(db, "{partition}")
    start(engine, "sales", "s1")
    start(engine, "expenses", "e1")
    deliver(engine, publisher)
    assert downstream(db) == []
    error = scalar(db, "SELECT last_error FROM asset_schedules WHERE pipeline = 'profit'")
    assert "needs a partition" in error
    # the upstream batch is not harmed (blast radius of one)
    assert scalar(db, "SELECT status::text FROM batches WHERE batch_id = 's1'") == "SUCCESS"
    assert scalar(db, "SELECT count(*) FROM asset_triggers") == 0


def test_a_failed_task_records_no_event(
    engine: DagEngine, publisher: InMemoryPublisher, db: Engine
) -> None:
    define(db)
    with db.begin() as conn:
        conn.execute(text("UPDATE tasks SET handler = 'python.fail' WHERE name = 'sales.load'"))
    start(engine, "sales", "s1")
    start(engine, "expenses", "e1")
    deliver(engine, publisher)
    assert scalar(db, "SELECT array_agg(asset) FROM asset_events") == [EXPENSES]
    assert downstream(db) == []


PIPELINE = {
    "pipeline": "profit",
    "on_assets": {"assets": [SALES, EXPENSES], "batch_id_template": "{partition}"},
    "tasks": [
        {"name": "profit.report", "handler": "python.noop", "updates": ["bq://finance.profit"]}
    ],
}


def test_a_file_applies_exports_and_versions_its_assets(tmp_path: Path, db: Engine) -> None:
    path = tmp_path / "profit.yaml"
    path.write_text(yaml.safe_dump(PIPELINE, sort_keys=False), encoding="utf-8")
    spec = load_pipeline(path)
    with db.begin() as conn:
        result = apply(conn, spec)
    assert result.on_assets == "created"
    with db.begin() as conn:
        assert apply(conn, spec).changes == 0
        exported = read_pipeline(conn, "profit")
    assert exported.on_assets == spec.on_assets
    assert exported.tasks[0].updates == ("bq://finance.profit",)
    assert yaml.safe_load(export_yaml(exported))["on_assets"] == PIPELINE["on_assets"]
    with db.begin() as conn:
        version = conn.execute(text("SELECT dagrelay_pipeline_version('profit', now())"))
        version_id = version.scalar_one()
        stored = conn.execute(
            text("SELECT updates FROM version_tasks WHERE version_id = :v"), {"v": version_id}
        ).scalar_one()
    assert stored == ["bq://finance.profit"]


def test_a_pipeline_waiting_for_its_own_asset_is_refused(tmp_path: Path, db: Engine) -> None:
    looping = {**PIPELINE, "on_assets": {"assets": ["bq://finance.profit"]}}
    path = tmp_path / "profit.yaml"
    path.write_text(yaml.safe_dump(looping, sort_keys=False), encoding="utf-8")
    with db.begin() as conn, pytest.raises(PipelineError, match="start itself forever"):
        apply(conn, load_pipeline(path))


def dagrelay(db_url: str, *args: str) -> Result:
    """``dagrelay ARGS`` in-process on this test's database (settings and engine afresh)."""
    for cached in (get_engine, get_settings):
        cached.cache_clear()
    env = {"DATABASE_URL": db_url, "COLUMNS": "200"}
    return CliRunner().invoke(cli.app, list(args), env=env)


def test_the_assets_verb_shows_producers_consumers_and_what_is_pending(
    engine: DagEngine, publisher: InMemoryPublisher, db: Engine, db_url: str
) -> None:
    define(db)
    start(engine, "sales", "s1")
    start(engine, "expenses", "e1")
    start(engine, "sales", "s2")
    deliver(engine, publisher)
    table = dagrelay(db_url, "assets")
    assert table.exit_code == 0, table.output
    assert "sales/sales.load" in table.stdout
    assert "sales/s2" in table.stdout  # the last update of the sales asset
    as_json = json.loads(dagrelay(db_url, "assets", "--json").stdout)
    by_name = {a["asset"]: a for a in as_json["assets"]}
    assert by_name[SALES]["producers"] == ["sales/sales.load"]
    assert by_name[SALES]["consumers"] == ["profit"]
    assert by_name[SALES]["events"] == 2
    (schedule,) = as_json["schedules"]
    assert (schedule["runs"], schedule["last_batch_id"]) == (1, "assets-1")
    assert schedule["pending"] == [SALES]  # s2 came after the batch: it waits for expenses


def test_a_paused_asset_schedule_keeps_its_events_and_starts_after_its_resume(
    engine: DagEngine, publisher: InMemoryPublisher, db: Engine, db_url: str
) -> None:
    define(db)
    paused = dagrelay(db_url, "schedule", "pause", "profit")
    assert paused.stdout.strip() == "asset schedule profit: paused"
    start(engine, "sales", "s1")
    start(engine, "expenses", "e1")
    deliver(engine, publisher)
    assert downstream(db) == []
    assert dagrelay(db_url, "schedule", "resume", "profit").exit_code == 0
    start(engine, "sales", "s2")
    deliver(engine, publisher)
    (batch,) = downstream(db)
    assert batch["trigger"] == [f"{EXPENSES}@e1", f"{SALES}@s1", f"{SALES}@s2"]
