"""The deployed router, in-process: functions-framework app + checked-in push envelopes.
Bad input is recorded and acknowledged (200); an infrastructure failure is a 500 (redelivery)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from google.api_core.exceptions import AlreadyExists
from google.cloud import pubsub_v1
from sqlalchemy import Engine, text

import dagrelay.config
import dagrelay.router.wiring
import dagrelay.store.db
from dagrelay.logs import JsonFormatter
from tests.integration.helpers import batch_status, framework_client, scalar, statuses

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PUSH = ROOT / "tests" / "fixtures" / "push"
PROJECT = "dagrelay-test"
TOPIC_PATH = f"/projects/{PROJECT}/topics/dagrelay-events"

InsertPipeline = Callable[..., dict[str, int]]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def fixture(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((PUSH / f"{name}.json").read_text(encoding="utf-8"))
    return body


def clear_caches() -> None:
    dagrelay.router.wiring.get_router.cache_clear()
    dagrelay.config.get_settings.cache_clear()
    dagrelay.store.db.get_engine.cache_clear()


@pytest.fixture(scope="module")
def events_topic(pubsub_emulator: str) -> str:
    client = pubsub_v1.PublisherClient()
    path: str = client.topic_path(PROJECT, "dagrelay-events")
    with contextlib.suppress(AlreadyExists):
        client.create_topic(name=path)
    return path


@pytest.fixture
def app_client(
    monkeypatch: pytest.MonkeyPatch, events_topic: str, db_url: str
) -> Iterator[Callable[[str | None], FlaskClient]]:
    """A factory: the router app with DATABASE_URL set (to the test database by default)."""
    monkeypatch.setenv("DAGRELAY_PROJECT_ID", PROJECT)
    monkeypatch.delenv("DAGRELAY_CONFIG", raising=False)
    dagrelay_log = logging.getLogger("dagrelay")
    saved = (list(dagrelay_log.handlers), dagrelay_log.propagate, dagrelay_log.level)

    def make(url: str | None = None) -> FlaskClient:
        monkeypatch.setenv("DATABASE_URL", url or db_url)
        clear_caches()
        return framework_client("router", "cloudevent")

    clear_caches()
    yield make
    clear_caches()
    dagrelay_log.handlers[:], dagrelay_log.propagate = saved[0], saved[1]
    dagrelay_log.setLevel(saved[2])


def post(client: FlaskClient, body: dict[str, Any]) -> int:
    return client.post(TOPIC_PATH, json=body).status_code


def rejected(db: Engine) -> dict[str, str]:
    with db.connect() as conn:
        return dict(conn.execute(text("SELECT message_id, reason FROM rejected_messages")).all())


@pytest.fixture
def monthly_profit(insert_pipeline: InsertPipeline) -> None:
    insert_pipeline(
        "monthly_profit",
        {
            "load_sales": [],
            "load_expenses": [],
            "calculate_profit": ["load_sales", "load_expenses"],
        },
    )


@pytest.mark.usefixtures("monthly_profit")
def test_start_batch_and_run_task(
    app_client: Callable[[str | None], FlaskClient], db: Engine
) -> None:
    client = app_client(None)
    assert post(client, fixture("start_batch")) == 200
    assert batch_status(db, "monthly_profit", "2024-03") == "RUNNING"
    assert scalar(db, "SELECT triggered_by FROM batches") == "scheduler"
    assert statuses(db, "2024-03") == {"load_sales": "NEW", "load_expenses": "NEW"}
    assert scalar(db, "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL") == 2

    assert post(client, fixture("run_task")) == 200
    assert statuses(db, "2024-03")["load_sales"] == "SUCCESS"
    assert post(client, fixture("start_batch")) == 200  # a redelivery: no-op
    assert scalar(db, "SELECT count(*) FROM task_log") == 2
    assert rejected(db) == {}


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("bad_base64", "not valid base64"),
        ("bad_json", "not JSON"),
        ("unknown_action", "unknown action 'explode'"),
        ("schema_violation", "start_batch: batch_id: 'not a valid id' does not match"),
    ],
)
def test_bad_message_is_recorded_and_acknowledged(
    app_client: Callable[[str | None], FlaskClient], db: Engine, name: str, reason: str
) -> None:
    client = app_client(None)
    body = fixture(name)
    assert post(client, body) == 200
    assert post(client, body) == 200  # the same message again: still one row
    rows = rejected(db)
    assert list(rows) == [body["message"]["messageId"]]
    assert reason in rows[body["message"]["messageId"]]


def test_gcs_notification_outside_the_inbox_is_acknowledged_and_ignored(
    app_client: Callable[[str | None], FlaskClient], db: Engine
) -> None:
    client = app_client(None)
    body = fixture("gcs_object_finalize")
    body["message"]["attributes"]["objectId"] = "archive/sales/123/sales_2024-03.csv"
    assert post(client, body) == 200
    assert rejected(db) == {}
    assert scalar(db, "SELECT count(*) FROM file_log") == 0


def envelope(message_id: str, data: str | None, **attributes: str) -> dict[str, Any]:
    """A push envelope as Pub/Sub sends it, around arbitrary (bad) content."""
    body = fixture("start_batch")
    body["message"].update(messageId=message_id, message_id=message_id, attributes=attributes)
    if data is None:
        del body["message"]["data"]
    else:
        body["message"]["data"] = data
    return body


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(envelope("x2", ""), id="empty data"),
        pytest.param(envelope("x3", "W10="), id="json list"),
        pytest.param(envelope("x4", base64.b64encode(b"\xff\xfe").decode()), id="not utf-8"),
        pytest.param(envelope("x5", b64('{"action": "run_task"}')), id="run_task without fields"),
        pytest.param(
            envelope("x6", b64('{"action": "run_task", "batch_id": "nope", "task": "ghost"}')),
            id="run_task for an unknown task",
        ),
        pytest.param(
            envelope("x7", b64('{"action": "start_batch", "pipeline": "nope", "batch_id": "b"}')),
            id="start_batch for an unknown pipeline",
        ),
        pytest.param(envelope("x8", b64("[" * 100_000)), id="deeply nested json"),
        pytest.param(envelope("x9", b64("1" * 5000)), id="huge integer"),
    ],
)
@pytest.mark.usefixtures("monthly_profit")
def test_router_never_answers_500_to_bad_input(
    app_client: Callable[[str | None], FlaskClient], db: Engine, body: dict[str, Any]
) -> None:
    client = app_client(None)
    assert post(client, body) == 200
    assert list(rejected(db)) == [body["message"]["messageId"]]


def test_database_outage_is_a_500(
    app_client: Callable[[str | None], FlaskClient], db_url: str
) -> None:
    missing = db_url.rsplit("/", 1)[0] + "/dagrelay_no_such_database"
    client = app_client(missing)
    assert post(client, fixture("start_batch")) == 500
    # A rejection the database cannot take is logged (its last resort) and acknowledged.
    assert post(client, fixture("bad_json")) == 200


# -- hostile input: every message ends processed, rejected (recorded) or dead-lettered ----------

DEAD_LETTER_PATH = f"/projects/{PROJECT}/topics/dagrelay-dead-letter"
Client = Callable[[str | None], FlaskClient]


def push(data: bytes | str | None, message_id: str = "h-1", **attributes: str) -> dict[str, Any]:
    raw = data.encode() if isinstance(data, str) else data
    message: dict[str, Any] = {"messageId": message_id, "attributes": attributes}
    if raw is not None:
        message["data"] = base64.b64encode(raw).decode()
    return {"message": message, "subscription": f"projects/{PROJECT}/subscriptions/s"}


def start(**fields: Any) -> str:
    return json.dumps({"action": "start_batch", "pipeline": "monthly_profit", **fields})


def rows(db: Engine, table: str = "rejected_messages") -> list[dict[str, Any]]:
    with db.connect() as conn:
        result = conn.execute(text(f"SELECT * FROM {table} ORDER BY 1"))
        return [dict(r) for r in result.mappings()]


@pytest.fixture
def error_lines() -> Iterator[list[dict[str, Any]]]:
    """The router's ERROR log lines, as the JSON Cloud Logging receives."""
    lines: list[dict[str, Any]] = []
    handler = logging.Handler(logging.ERROR)
    formatter = JsonFormatter()
    handler.emit = lambda record: lines.append(json.loads(formatter.format(record)))  # type: ignore[method-assign]
    logger = logging.getLogger("dagrelay.router.dispatch")
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


@pytest.mark.usefixtures("monthly_profit")
@pytest.mark.parametrize("batch_id", ["2024-03\n", "2024-03\r\n", "\u00b2"])
def test_a_value_the_schema_must_refuse_is_a_recorded_rejection(
    app_client: Client, db: Engine, batch_id: str
) -> None:
    assert post(app_client(None), push(start(batch_id=batch_id))) == 200
    [row] = rows(db)
    assert "batch_id" in row["reason"]
    assert "does not match" in row["reason"]
    assert scalar(db, "SELECT count(*) FROM batches") == 0


@pytest.mark.fresh_db  # it adds a CHECK to batches
@pytest.mark.usefixtures("monthly_profit")
def test_a_value_the_database_refuses_is_a_recorded_rejection(
    app_client: Client, db: Engine
) -> None:
    """Validation and the database can drift (a CHECK added by hand): still a rejection."""
    with db.begin() as conn:
        conn.execute(text("ALTER TABLE batches ADD CONSTRAINT no_x CHECK (batch_id <> 'x')"))
    client = app_client(None)
    assert post(client, push(start(batch_id="x"))) == 200
    [row] = rows(db)
    assert row["reason"].startswith("the database refused a value (23514)")
    assert "no_x" in row["reason"]
    assert post(client, push(start(batch_id="y"), "h-2")) == 200
    assert batch_status(db, "monthly_profit", "y") == "RUNNING"


@pytest.mark.usefixtures("monthly_profit")
@pytest.mark.parametrize(
    ("data", "attributes", "where"),
    [
        pytest.param(start(batch_id="b", triggered_by="me\u0000"), {}, "triggered_by", id="tb"),
        pytest.param(start(batch_id="b", params={"k": "\u0000"}), {}, "params/k", id="params"),
        pytest.param(start(batch_id="b"), {"origin": "a\u0000b"}, "attribute origin", id="attr"),
    ],
)
def test_nul_is_rejected_and_stored_escaped(
    app_client: Client, db: Engine, data: str, attributes: dict[str, str], where: str
) -> None:
    assert post(app_client(None), push(data, **attributes)) == 200
    [row] = rows(db)
    assert f"{where}: contains a NUL character" in row["reason"]
    assert row["attributes"] == {k: v.replace("\x00", "\\u0000") for k, v in attributes.items()}
    assert scalar(db, "SELECT count(*) FROM batches") == 0


def test_a_huge_message_is_stored_bounded_with_its_size_and_hash(
    app_client: Client, db: Engine
) -> None:
    body = push(b"\xff" * 7_500_000)
    data = body["message"]["data"]
    assert post(app_client(None), body) == 200
    [row] = rows(db)
    assert "larger than" in row["reason"]
    assert row["data"] == data[:65_536]
    assert row["payload_bytes"] == len(data)
    assert row["payload_sha256"] == hashlib.sha256(data.encode()).hexdigest()


def test_a_reused_message_id_never_hides_a_new_rejection(app_client: Client, db: Engine) -> None:
    client = app_client(None)
    assert post(client, push("not json", "7")) == 200
    assert post(client, push("not json", "7")) == 200  # a redelivery: no new row
    assert post(client, push("other garbage", "7")) == 200  # an id reused after a restart
    assert [r["message_id"] for r in rows(db)] == ["7", "7"]
    assert len({r["payload_sha256"] for r in rows(db)}) == 2


def test_a_rejection_that_cannot_be_recorded_is_logged_and_acknowledged(
    app_client: Client, db_url: str, error_lines: list[dict[str, Any]]
) -> None:
    client = app_client(db_url.rsplit("/", 1)[0] + "/dagrelay_no_such_database")
    body = push("not json \u0000", "lost-1")
    assert post(client, body) == 200
    [line] = error_lines
    assert line["severity"] == "ERROR"
    assert line["record"] == "rejection"
    assert line["message_id"] == "lost-1"
    assert "not JSON" in line["reason"]
    data = body["message"]["data"]
    assert line["payload_bytes"] == len(data)
    assert line["payload_sha256"] == hashlib.sha256(data.encode()).hexdigest()


@pytest.mark.usefixtures("monthly_profit")
def test_a_dead_letter_with_nul_is_recorded_escaped_and_acknowledged(
    app_client: Client, db: Engine
) -> None:
    client = app_client(None)
    body = push(start(batch_id="b", triggered_by="\u0000"), "d-1", note="x\u0000")
    response = client.post(DEAD_LETTER_PATH, json=body)
    assert response.status_code == 200
    assert client.post(DEAD_LETTER_PATH, json=body).status_code == 200
    [row] = rows(db, "dead_letters")
    assert row["attributes"] == {"note": "x\\u0000"}
    assert "NUL" in row["reason"]
    assert "\x00" not in row["reason"]


def test_a_dead_letter_that_cannot_be_recorded_is_logged_and_acknowledged(
    app_client: Client, db_url: str, error_lines: list[dict[str, Any]]
) -> None:
    client = app_client(db_url.rsplit("/", 1)[0] + "/dagrelay_no_such_database")
    response = client.post(DEAD_LETTER_PATH, json=push(start(batch_id="b"), "d-2"))
    assert response.status_code == 200
    [line] = error_lines
    assert line["record"] == "dead letter"
    assert line["message_id"] == "d-2"
