"""The ``dagrelay`` console script against a real database and the Pub/Sub emulator."""

from __future__ import annotations

import getpass
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.cloud import pubsub_v1
from sqlalchemy import Engine, create_engine, text
from typer.testing import CliRunner, Result

from dagrelay import cli
from dagrelay.config import get_settings
from dagrelay.engine.core import Engine as DagEngine
from dagrelay.messages import StartBatch
from dagrelay.pipelines.apply import apply as apply_pipeline
from dagrelay.pipelines.spec import load_pipeline
from dagrelay.store.db import get_engine
from dagrelay.store.outbox import InMemoryPublisher
from tests.integration.helpers import drive

pytestmark = pytest.mark.integration

MONTHLY_PROFIT = (
    Path(__file__).resolve().parents[1] / "fixtures" / "pipelines" / "monthly_profit.yaml"
)
Run = Callable[..., Result]


def _reset() -> None:
    """Settings and the engine are cached per process: start each command afresh."""
    get_engine.cache_clear()
    get_settings.cache_clear()


@pytest.fixture
def run(db_url: str) -> Iterator[Run]:
    """Run ``dagrelay ARGS`` in-process with DATABASE_URL set to this test's database."""

    def invoke(*args: str, **env: str) -> Result:
        _reset()
        try:
            return CliRunner().invoke(cli.app, list(args), env={"DATABASE_URL": db_url, **env})
        finally:
            _reset()

    yield invoke
    _reset()


def write(tmp_path: Path, source: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(source, encoding="utf-8")
    return str(path)


def test_help_lists_the_commands(run: Run) -> None:
    result = run("--help")
    assert result.exit_code == 0
    for command in ("db", "pipeline", "trigger", "status"):
        assert command in result.stdout


# -- db upgrade ------------------------------------------------------------------------------


def test_db_upgrade_builds_an_empty_database(run: Run, empty_db_url: str) -> None:
    first = run("db", "upgrade", DATABASE_URL=empty_db_url)
    again = run("db", "upgrade", "--revision", "head", DATABASE_URL=empty_db_url)

    assert (first.exit_code, again.exit_code) == (0, 0), first.output + again.output
    assert first.stdout.startswith("database at revision ")
    assert again.stdout == first.stdout
    engine = create_engine(empty_db_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM tasks")).scalar_one() == 0
    finally:
        engine.dispose()


def test_unreachable_database_is_one_line(run: Run) -> None:
    result = run("status", "b1", DATABASE_URL="postgresql+pg8000://nobody@127.0.0.1:1/none")

    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot reach the database:")
    assert len(result.stderr.splitlines()) == 1


def test_database_without_schema(run: Run, empty_db_url: str) -> None:
    result = run("status", "b1", DATABASE_URL=empty_db_url)

    assert result.exit_code == 1
    assert result.stderr == (
        'error: relation "batches" does not exist: run `dagrelay db upgrade` first\n'
    )


# -- pipeline apply --------------------------------------------------------------------------


def tasks(db: Engine) -> list[str]:
    with db.connect() as conn:
        return list(conn.execute(text("SELECT name FROM tasks ORDER BY name")).scalars())


def test_pipeline_apply_dry_run_then_apply(run: Run, db: Engine) -> None:
    dry = run("pipeline", "apply", str(MONTHLY_PROFIT), "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert dry.stdout.startswith(
        "dry run, nothing written: pipeline monthly_profit: 3 created, 0 updated, 0 unchanged; "
        "2 edges added, 0 removed\n"
    )
    assert tasks(db) == []

    applied = run("pipeline", "apply", str(MONTHLY_PROFIT))
    assert applied.exit_code == 0, applied.output
    assert "  created: load_sales, load_expenses, calculate_profit\n" in applied.stdout
    assert "  edges added: " in applied.stdout
    assert tasks(db) == ["calculate_profit", "load_expenses", "load_sales"]

    again = run("pipeline", "apply", str(MONTHLY_PROFIT))
    assert again.stdout == (
        "pipeline monthly_profit: 0 created, 0 updated, 3 unchanged; 0 edges added, 0 removed\n"
    )


def test_invalid_pipeline_prints_every_problem(run: Run, db: Engine, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "pipeline: p\ntasks:\n"
        "  - {name: a, handler: python.noop, parents: [b]}\n"
        "  - {name: b, handler: nope, parents: [a]}\n",
    )

    for command in ("validate", "apply"):
        result = run("pipeline", command, path)
        assert result.exit_code == 2
        assert result.stderr == (
            "error: bad.yaml: task 'b': unknown handler 'nope' (register it with @handler('nope') "
            "in a module named in DAGRELAY_HANDLER_MODULES (comma-separated), or in the "
            "'dagrelay.handlers' entry-point group)\n"
            "error: bad.yaml: cycle: a -> b -> a\n"
        )
    assert tasks(db) == []


def test_schema_error_exit_code(run: Run, tmp_path: Path) -> None:
    path = write(tmp_path, "pipeline: p\ntasks: [{name: a, handler: python.noop, enabled: 3}]\n")

    result = run("pipeline", "apply", path)

    assert result.exit_code == 2
    assert result.stderr == "error: bad.yaml: task 'a': enabled: 3 is not of type 'boolean'\n"
    assert "Traceback" not in result.output


def test_a_task_name_another_pipeline_uses_is_free(run: Run, db: Engine, tmp_path: Path) -> None:
    with db.begin() as conn:
        conn.execute(text("INSERT INTO tasks (name, pipeline, handler) VALUES ('a', 'other', 'x')"))
    path = write(tmp_path, "pipeline: p\ntasks: [{name: a, handler: python.noop}]\n")

    result = run("pipeline", "apply", path)

    assert result.exit_code == 0, result.stderr
    with db.connect() as conn:
        rows = conn.execute(text("SELECT pipeline, handler FROM tasks WHERE name = 'a'")).all()
    assert sorted(tuple(r) for r in rows) == [("other", "x"), ("p", "python.noop")]


def test_pipeline_validate(run: Run) -> None:
    result = run("pipeline", "validate", str(MONTHLY_PROFIT))
    assert (result.exit_code, result.stdout) == (
        0,
        "monthly_profit.yaml: pipeline monthly_profit is valid (3 tasks)\n",
    )


def test_missing_file_is_a_usage_error(run: Run, tmp_path: Path) -> None:
    result = run("pipeline", "apply", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


# -- status ----------------------------------------------------------------------------------


def run_batch(db: Engine, engine: DagEngine, publisher: InMemoryPublisher, batch_id: str) -> None:
    with db.begin() as conn:
        apply_pipeline(conn, load_pipeline(MONTHLY_PROFIT))
    engine.start_batch(StartBatch(pipeline="monthly_profit", batch_id=batch_id))
    drive(engine, publisher)


def test_status_of_a_finished_batch(
    run: Run, db: Engine, engine: DagEngine, publisher: InMemoryPublisher
) -> None:
    run_batch(db, engine, publisher, "2024-03")

    table = run("status", "2024-03", "--pipeline", "monthly_profit", COLUMNS="200")
    as_json = run("status", "2024-03", "--json", COLUMNS="200")

    assert table.exit_code == 0, table.output
    assert "monthly_profit / 2024-03  SUCCESS" in table.stdout
    for task in ("load_sales", "load_expenses", "calculate_profit"):
        assert task in table.stdout
    assert as_json.exit_code == 0, as_json.output
    (batch,) = json.loads(as_json.stdout)["batches"]
    assert batch["status"] == "SUCCESS"
    assert {t["task"]: (t["status"], t["attempt"]) for t in batch["tasks"]} == {
        "load_sales": ("SUCCESS", 1),
        "load_expenses": ("SUCCESS", 1),
        "calculate_profit": ("SUCCESS", 1),
    }
    with db.connect() as conn:
        output = conn.execute(
            text(
                "SELECT tl.output FROM task_log tl JOIN tasks t USING (task_id) "
                "WHERE t.name = 'calculate_profit' AND tl.batch_id = '2024-03'"
            )
        ).scalar_one()
    assert output == {"profit": 420.25, "batch_id": "2024-03"}


def test_status_shows_the_root_cause(
    run: Run,
    engine: DagEngine,
    publisher: InMemoryPublisher,
    insert_pipeline: Callable[..., dict[str, int]],
) -> None:
    insert_pipeline(
        "failing",
        {"child": ["bad"]},
        handlers={"bad": "python.fail"},
        params={"bad": '{"message": "disk on fire", "retryable": false}'},
    )
    engine.start_batch(StartBatch(pipeline="failing", batch_id="b1"))
    drive(engine, publisher)

    result = run("status", "b1", COLUMNS="200")

    assert result.exit_code == 0, result.output
    assert "failing / b1  FAILED" in result.stdout
    assert "disk on fire" in result.stdout
    assert "upstream: bad failed" in result.stdout


def test_status_lists_the_batch_dead_letters(
    run: Run, db: Engine, engine: DagEngine, publisher: InMemoryPublisher
) -> None:
    run_batch(db, engine, publisher, "2024-03")
    with db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO dead_letters (message_id, action, pipeline, batch_id, task, "
                "delivery_attempts, payload_bytes, payload_sha256, reason) VALUES ('m-1', "
                "'run_task', 'monthly_profit', '2024-03', 'load_sales', 5, 0, "
                "encode(sha256(''), 'hex'), 'dead-lettered after 5 failed deliveries')"
            )
        )

    result = run("status", "2024-03", COLUMNS="200")
    as_json = run("status", "2024-03", "--json", COLUMNS="200")

    assert result.exit_code == 0, result.output
    assert "dead letters" in result.stdout
    assert "dead-lettered after 5 failed deliveries" in result.stdout
    (batch,) = json.loads(as_json.stdout)["batches"]
    assert [(d["task"], d["delivery_attempts"]) for d in batch["dead_letters"]] == [
        ("load_sales", 5)
    ]


def test_status_of_an_unknown_batch(run: Run) -> None:
    result = run("status", "nope", "--pipeline", "p")
    assert (result.exit_code, result.stderr) == (1, "error: no batch 'nope' in pipeline 'p'\n")


# -- trigger ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        pytest.param([], {}, id="none"),
        pytest.param(["n=3", "ok=true", "x=null"], {"n": 3, "ok": True, "x": None}, id="json"),
        pytest.param(["month=2024-03", "s=a=b"], {"month": "2024-03", "s": "a=b"}, id="text"),
        pytest.param(['l=[1, "a"]', "o={}"], {"l": [1, "a"], "o": {}}, id="json containers"),
        pytest.param(["e=", "nan=NaN"], {"e": "", "nan": "NaN"}, id="empty and NaN are text"),
    ],
)
def test_parse_params(items: list[str], expected: dict[str, Any]) -> None:
    assert cli.trigger.parse_params(items) == expected


def pull_one(subscription: str, timeout_s: float = 30) -> Any:
    """The first message of the subscription (acknowledged), pulling until ``timeout_s``."""
    with pubsub_v1.SubscriberClient() as subscriber:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            response = subscriber.pull(subscription=subscription, max_messages=1, timeout=10)
            if response.received_messages:
                received = response.received_messages[0]
                subscriber.acknowledge(subscription=subscription, ack_ids=[received.ack_id])
                return received.message
    raise AssertionError(f"no message on {subscription} within {timeout_s}s")


def test_trigger_publishes_start_batch(
    run: Run, db: Engine, pubsub_emulator: str, unique: str
) -> None:
    with db.begin() as conn:
        apply_pipeline(conn, load_pipeline(MONTHLY_PROFIT))
    project, topic_id = "dagrelay-test", f"events-{unique}"
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.create_topic(name=publisher.topic_path(project, topic_id)).name
    with pubsub_v1.SubscriberClient() as subscriber:
        subscription = subscriber.subscription_path(project, f"cli-{unique}")
        subscriber.create_subscription(name=subscription, topic=topic)

    result = run(
        "trigger",
        "monthly_profit",
        "2024-03",
        "--param",
        "month=2024-03",
        "-p",
        "rows=3",
        "--start-task",
        "load_sales",
        DAGRELAY_PROJECT_ID=project,
        DAGRELAY_EVENTS_TOPIC=topic_id,
    )

    assert result.exit_code == 0, result.output
    message = pull_one(subscription)
    assert result.stdout == (
        f"published start_batch monthly_profit/2024-03 (message id {message.message_id})\n"
    )
    assert dict(message.attributes).keys() == {"action", "request_id"}
    assert message.attributes["action"] == "start_batch"
    assert json.loads(message.data) == {
        "action": "start_batch",
        "pipeline": "monthly_profit",
        "batch_id": "2024-03",
        "params": {"month": "2024-03", "rows": 3},
        "start_task": "load_sales",
        "triggered_by": f"cli:{getpass.getuser()}",
    }


def test_trigger_to_a_missing_topic_fails_cleanly(
    run: Run, pubsub_emulator: str, unique: str
) -> None:
    result = run(
        "trigger",
        "p",
        "b1",
        "--no-check",
        DAGRELAY_PROJECT_ID="dagrelay-test",
        DAGRELAY_EVENTS_TOPIC=unique,
    )

    assert result.exit_code == 2
    assert result.stderr.startswith(
        f"error: publishing to projects/dagrelay-test/topics/{unique} failed:"
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(
            ["p", "bad id"],
            "error: start_batch: batch_id: 'bad id' does not match "
            "'^[A-Za-z0-9][A-Za-z0-9_.:=+-]{0,127}$'\n",
            id="bad batch id",
        ),
        pytest.param(
            ["p", "b1", "--param", "bad-key=1"],
            "error: start_batch: params: 'bad-key' does not match '^[A-Za-z_][A-Za-z0-9_]*$'\n",
            id="bad param name",
        ),
    ],
)
def test_trigger_refuses_an_invalid_message(run: Run, args: list[str], expected: str) -> None:
    result = run("trigger", *args)
    assert (result.exit_code, result.stderr) == (2, expected)


def test_trigger_param_without_equals_is_a_usage_error(run: Run) -> None:
    result = run("trigger", "p", "b1", "--param", "oops")
    assert result.exit_code == 2
    assert "'oops' is not k=v" in result.stderr
