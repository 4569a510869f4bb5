"""The operator function's actions, in-process under functions-framework against a real
database and the real Pub/Sub emulator: a POST that may come from another site (no token, a
foreign Origin or Sec-Fetch-Site, neither header) or a GET is refused and publishes nothing;
a valid POST publishes exactly the message the CLI publishes, with ``triggered_by`` set to the
caller."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from google.cloud import pubsub_v1
from sqlalchemy import Engine, text

import dagrelay.config
import dagrelay.store.db
from dagrelay.cli.trigger import start_batch_message
from dagrelay.dashboard import publish
from dagrelay.dashboard.csrf import COOKIE
from dagrelay.engine.core import Engine as DagEngine
from dagrelay.messages import CancelBatch, StartBatch
from dagrelay.store.outbox import InMemoryPublisher
from tests.integration.helpers import drive, framework_client

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "dagrelay-test"
ORIGIN = "http://localhost"
SAME = {"Origin": ORIGIN, "Sec-Fetch-Site": "same-origin"}


def clear_caches() -> None:
    dagrelay.config.get_settings.cache_clear()
    dagrelay.store.db.get_engine.cache_clear()
    publish.publisher.cache_clear()


class Events:
    """The test's events topic and a pull subscription on it."""

    def __init__(self, unique: str) -> None:
        self.topic_id = f"events-{unique}"
        client = pubsub_v1.PublisherClient()
        topic = client.create_topic(name=client.topic_path(PROJECT, self.topic_id)).name
        with pubsub_v1.SubscriberClient() as subscriber:
            self.subscription = subscriber.subscription_path(PROJECT, f"dash-{unique}")
            subscriber.create_subscription(name=self.subscription, topic=topic)

    def pull(self, at_least: int, timeout_s: float = 30) -> list[tuple[dict[str, Any], str]]:
        """(message, action attribute) of what arrived, once ``at_least`` did; acknowledged."""
        found: list[tuple[dict[str, Any], str]] = []
        with pubsub_v1.SubscriberClient() as subscriber:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                response = subscriber.pull(
                    subscription=self.subscription, max_messages=50, timeout=2
                )
                if response.received_messages:
                    subscriber.acknowledge(
                        subscription=self.subscription,
                        ack_ids=[r.ack_id for r in response.received_messages],
                    )
                found += [
                    (json.loads(r.message.data), r.message.attributes["action"])
                    for r in response.received_messages
                ]
                if len(found) >= at_least and not response.received_messages:
                    return found
        assert len(found) >= at_least, found
        return found


@pytest.fixture
def events(pubsub_emulator: str, unique: str) -> Events:
    return Events(unique)


def function_client(
    target: str, monkeypatch: pytest.MonkeyPatch, db_url: str, events: Events
) -> FlaskClient:
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("DAGRELAY_PROJECT_ID", PROJECT)
    monkeypatch.setenv("DAGRELAY_EVENTS_TOPIC", events.topic_id)
    monkeypatch.delenv("DAGRELAY_CONFIG", raising=False)
    clear_caches()
    return framework_client(target, "http")


@pytest.fixture
def operate(monkeypatch: pytest.MonkeyPatch, db_url: str, events: Events) -> Iterator[FlaskClient]:
    yield function_client("operate", monkeypatch, db_url, events)
    clear_caches()


@pytest.fixture
def pipeline(
    insert_pipeline: Callable[..., dict[str, int]],
    engine: DagEngine,
    publisher: InMemoryPublisher,
) -> None:
    """``ops`` (first -> second -> third) with batch b1 FAILED at ``second``, and b4 RUNNING
    with only ``first`` started."""
    insert_pipeline(
        "ops",
        {"first": [], "second": ["first"], "third": ["second"]},
        handlers={"second": "python.fail"},
    )
    engine.start_batch(StartBatch("ops", "b1"))
    drive(engine, publisher)
    engine.start_batch(StartBatch("ops", "b4"))


def token(client: FlaskClient) -> str:
    """Open a page as a browser would: the form's token (the cookie holds the same)."""
    html = client.get("/pipelines/ops").get_data(as_text=True)
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None, "the operator's page has no action form"
    cookie = client.get_cookie(COOKIE)
    assert cookie is not None
    assert cookie.value == found.group(1)
    assert cookie.http_only
    assert cookie.same_site == "Strict"
    return found.group(1)


TRIGGER = {"pipeline": "ops", "batch_id": "b2", "params": '{"month": "2024-03"}'}


@pytest.mark.usefixtures("pipeline")
def test_cross_site_or_tokenless_requests_are_refused_and_publish_nothing(
    operate: FlaskClient, events: Events
) -> None:
    good = token(operate)
    refused = [
        ("no token", TRIGGER, SAME),
        ("wrong token", TRIGGER | {"csrf_token": "x" * 43}, SAME),
        ("foreign Origin", TRIGGER | {"csrf_token": good}, {"Origin": "https://evil.example"}),
        ("cross-site fetch", TRIGGER | {"csrf_token": good}, {"Sec-Fetch-Site": "cross-site"}),
        ("same-site fetch", TRIGGER | {"csrf_token": good}, {"Sec-Fetch-Site": "same-site"}),
        ("neither header", TRIGGER | {"csrf_token": good}, {}),
    ]
    for why, form, headers in refused:
        response = operate.post("/actions/trigger", data=form, headers=headers)
        assert response.status_code == 403, why
        assert "refused" in response.get_data(as_text=True), why
    response = operate.get("/actions/trigger", query_string=TRIGGER | {"csrf_token": good})
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    operate.delete_cookie(COOKIE)
    response = operate.post("/actions/trigger", data=TRIGGER | {"csrf_token": good}, headers=SAME)
    assert response.status_code == 403, "a token without its cookie"

    token(operate)  # the same cookie again, so the next POST is good
    operate.set_cookie(COOKIE, good)
    response = operate.post(
        "/actions/cancel",
        data={"pipeline": "ops", "batch_id": "b1", "csrf_token": good},
        headers=SAME,
    )
    assert response.status_code == 409  # b1 is FAILED: refused before publishing
    response = operate.post("/actions/trigger", data=TRIGGER | {"csrf_token": good}, headers=SAME)
    assert response.status_code == 200, response.get_data(as_text=True)
    (only,) = events.pull(at_least=1)
    assert only[0]["batch_id"] == "b2", "something refused was published"


FORGED = "Bearer e30.{}.sig".format(
    base64.urlsafe_b64encode(json.dumps({"email": "ceo@corp.example"}).encode()).decode()
)  # claims nobody signed (a valid token is tests/unit/test_identity.py's)


@pytest.mark.usefixtures("pipeline")
def test_trigger_publishes_the_clis_message_with_who_asked(
    operate: FlaskClient, events: Events
) -> None:
    """Locally (no id_token_audiences) no token is read: an unsigned one changes nothing."""
    good = token(operate)
    form = TRIGGER | {"csrf_token": good, "start_task": "second"}
    response = operate.post("/actions/trigger", data=form, headers=SAME | {"Authorization": FORGED})
    assert response.status_code == 200
    assert 'data-published="1"' in response.get_data(as_text=True)
    expected = start_batch_message("ops", "b2", {"month": "2024-03"}, "second")
    expected["triggered_by"] = "dashboard:local"
    assert events.pull(at_least=1) == [(expected, "start_batch")]


@pytest.mark.usefixtures("pipeline")
def test_a_forged_token_is_refused_and_nothing_is_published(
    operate: FlaskClient, events: Events, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGRELAY_ID_TOKEN_AUDIENCES", "https://operate.example.run.app")
    dagrelay.config.get_settings.cache_clear()
    good = token(operate)
    form = TRIGGER | {"csrf_token": good}
    response = operate.post("/actions/trigger", data=form, headers=SAME | {"Authorization": FORGED})
    assert response.status_code == 401
    assert "the ID token is not valid" in response.get_data(as_text=True)
    response = operate.post("/actions/trigger", data=form, headers=SAME)
    assert response.status_code == 401
    assert "no ID token" in response.get_data(as_text=True)
    assert events.pull(at_least=0, timeout_s=3) == []


@pytest.mark.usefixtures("pipeline")
@pytest.mark.parametrize(
    ("action", "form", "expected"),
    [
        (
            "rerun",
            {"task": "second"},
            [{"action": "rerun", "task": "second", "downstream": False}],
        ),
        (
            "rerun",
            {"task": "second", "downstream": "1"},
            [{"action": "rerun", "task": "second", "downstream": True}],
        ),
        (
            "rerun-failed",
            {},
            [{"action": "rerun", "task": "second", "downstream": True}],
        ),
    ],
)
def test_reruns_publish_rerun_messages(
    operate: FlaskClient,
    events: Events,
    action: str,
    form: dict[str, str],
    expected: list[dict[str, Any]],
) -> None:
    key = {"pipeline": "ops", "batch_id": "b1"}
    response = operate.post(
        f"/actions/{action}", data=key | form | {"csrf_token": token(operate)}, headers=SAME
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    who = {"triggered_by": "dashboard:local"}
    assert events.pull(at_least=len(expected)) == [(key | e | who, "rerun") for e in expected]


@pytest.mark.usefixtures("pipeline")
def test_cancel_publishes_cancel_batch(
    operate: FlaskClient, events: Events, engine: DagEngine
) -> None:
    engine.start_batch(StartBatch("ops", "b3"))  # RUNNING: its first task is not driven
    form = {"pipeline": "ops", "batch_id": "b3", "csrf_token": token(operate)}
    assert operate.post("/actions/cancel", data=form, headers=SAME).status_code == 200
    expected = {"action": "cancel_batch", "pipeline": "ops", "batch_id": "b3"}
    assert events.pull(at_least=1) == [
        (expected | {"triggered_by": "dashboard:local"}, "cancel_batch")
    ]


@pytest.mark.usefixtures("pipeline")
def test_resume_publishes_resume_for_a_cancelled_batch_only(
    operate: FlaskClient, events: Events, engine: DagEngine
) -> None:
    engine.start_batch(StartBatch("ops", "b5"))  # RUNNING: its first task is not driven
    form = {"pipeline": "ops", "batch_id": "b5", "csrf_token": token(operate)}
    refused = operate.post("/actions/resume", data=form, headers=SAME)
    assert refused.status_code == 409
    assert "only a CANCELLED batch resumes" in refused.get_data(as_text=True)
    engine.cancel_batch(CancelBatch("ops", "b5"))
    page = operate.get("/batches/ops/b5").get_data(as_text=True)
    assert "Resume (run what never ran)" in page
    assert operate.post("/actions/resume", data=form, headers=SAME).status_code == 200
    expected = {"action": "resume", "pipeline": "ops", "batch_id": "b5"}
    assert events.pull(at_least=1) == [(expected | {"triggered_by": "dashboard:local"}, "resume")]


@pytest.mark.usefixtures("pipeline")
@pytest.mark.parametrize(
    ("action", "form", "status", "problem"),
    [
        ("trigger", {"pipeline": "nope", "batch_id": "b9"}, 404, "unknown pipeline"),
        ("trigger", {"pipeline": "ops", "batch_id": "b1"}, 409, "already exists (FAILED)"),
        ("trigger", {"pipeline": "ops", "batch_id": "b9", "params": "{"}, 400, "not JSON"),
        ("trigger", {"pipeline": "ops", "batch_id": "b9", "params": "[1]"}, 400, "JSON object"),
        ("trigger", {"pipeline": "ops", "batch_id": "b9", "start_task": "x"}, 404, "not a task"),
        ("trigger", {"pipeline": "ops", "batch_id": "b/9"}, 400, "batch_id"),
        ("rerun", {"pipeline": "ops", "batch_id": "b4", "task": "third"}, 409, "not started"),
        ("rerun", {"pipeline": "ops", "batch_id": "b9", "task": "first"}, 404, "no batch"),
        ("rerun", {"pipeline": "ops", "batch_id": "b1"}, 400, "lacks &#39;task&#39;"),
        ("nothing", {"pipeline": "ops", "batch_id": "b1"}, 404, "no action"),
    ],
)
def test_impossible_actions_are_refused_naming_the_problem(
    operate: FlaskClient,
    events: Events,
    action: str,
    form: dict[str, str],
    status: int,
    problem: str,
) -> None:
    response = operate.post(
        f"/actions/{action}", data=form | {"csrf_token": token(operate)}, headers=SAME
    )
    assert response.status_code == status
    assert problem in response.get_data(as_text=True)
    assert events.pull(at_least=0, timeout_s=3) == []


@pytest.mark.usefixtures("pipeline")
def test_the_viewers_function_has_no_actions(
    monkeypatch: pytest.MonkeyPatch, db_url: str, events: Events
) -> None:
    status = function_client("status", monkeypatch, db_url, events)
    html = status.get("/batches/ops/b1").get_data(as_text=True)
    assert '<form class="action"' not in html
    assert status.get_cookie(COOKIE) is None
    response = status.post(
        "/actions/cancel", data={"pipeline": "ops", "batch_id": "b1"}, headers=SAME
    )
    assert response.status_code == 403
    assert "read-only" in response.get_data(as_text=True)
    clear_caches()


@pytest.mark.usefixtures("pipeline")
def test_a_cancelling_batch_offers_no_rerun_and_refuses_one(
    operate: FlaskClient, events: Events, db: Engine
) -> None:
    page = operate.get("/batches/ops/b1").get_data(as_text=True)
    assert "Rerun failed tasks" in page  # b1 FAILED at second
    with db.begin() as conn:  # as if an attempt of b1 still ran when it was cancelled
        conn.execute(text("UPDATE batches SET status = 'CANCELLING' WHERE batch_id = 'b1'"))
    page = operate.get("/batches/ops/b1").get_data(as_text=True)
    assert "Rerun failed tasks" not in page
    assert "Resume" not in page
    key = {"pipeline": "ops", "batch_id": "b1", "csrf_token": token(operate)}
    for action, form in (("rerun-failed", {}), ("rerun", {"task": "second"})):
        response = operate.post(f"/actions/{action}", data=key | form, headers=SAME)
        assert response.status_code == 409, action
        assert "is CANCELLING" in response.get_data(as_text=True), action
    assert events.pull(at_least=0, timeout_s=3) == []
