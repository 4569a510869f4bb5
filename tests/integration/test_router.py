"""The deployed router, in-process: functions-framework app + checked-in push envelopes.
Bad input is recorded and acknowledged (200); an infrastructure failure is a 500 (redelivery)."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import functions_framework
import pytest
from flask.testing import FlaskClient
from google.api_core.exceptions import AlreadyExists
from google.cloud import pubsub_v1
from sqlalchemy import Engine, text

import dagrelay.config
import dagrelay.router.wiring
import dagrelay.store.db
from tests.integration.helpers import batch_status, scalar, statuses

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PUSH = ROOT / "tests" / "fixtures" / "push"
PROJECT = "dagrelay-test"
TOPIC_PATH = f"/projects/{PROJECT}/topics/dagrelay-events"

InsertPipeline = Callable[..., dict[str, int]]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def fixture(name: str) -> dict[str, Any]:
    return json.loads((PUSH / f"{name}.json").read_text(encoding="utf-8"))


def clear_caches() -> None:
    dagrelay.router.wiring.get_router.cache_clear()
    dagrelay.config.get_settings.cache_clear()
    dagrelay.store.db.get_engine.cache_clear()


@pytest.fixture(scope="module")
def events_topic(pubsub_emulator: str) -> str:
    client = pubsub_v1.PublisherClient()
    path = client.topic_path(PROJECT, "dagrelay-events")
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
        app = functions_framework.create_app(
            target="router", source=str(ROOT / "functions" / "main.py"), signature_type="cloudevent"
        )
        return app.test_client()

    clear_caches()
    yield make
    if dagrelay.store.db.get_engine.cache_info().currsize:
        dagrelay.store.db.get_engine().dispose()
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
    assert post(client, fixture("bad_json")) == 500  # cannot even record the rejection
