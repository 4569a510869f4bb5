"""The operator and status functions never answer 5xx to what a caller sends: a body over the
limit is 413 naming the limit and the size; params nested too deep, a form that is not UTF-8,
a NUL, a number JSON cannot hold (1e999) or a message the router would refuse is 400; a
publisher that fails is 502/503 with the reason. Whatever is refused publishes nothing, and
what the dashboard publishes the router accepts (the same check, ``engine.admission``)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine

import dagrelay.config
import dagrelay.store.db
from dagrelay.dashboard import limits, publish
from dagrelay.dashboard.csrf import COOKIE
from dagrelay.engine.core import Engine as DagEngine
from dagrelay.errors import BadMessage
from dagrelay.messages import MAX_DATA_BYTES, MAX_DEPTH, Envelope, StartBatch, parse
from dagrelay.router.dispatch import Router
from dagrelay.store.outbox import InMemoryPublisher, OutgoingMessage
from tests.conftest import FakeClock
from tests.integration.helpers import drive, framework_client

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "t" * 43
SAME = {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
FORM = "application/x-www-form-urlencoded"


class FailingPublisher:
    """Pub/Sub refusing every message (as when the topic is gone or the service is down)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.calls = 0

    def publish(self, messages: Sequence[OutgoingMessage]) -> list[BaseException | None]:
        self.calls += 1
        return [self.error for _ in messages]


def clear_caches() -> None:
    dagrelay.config.get_settings.cache_clear()
    dagrelay.store.db.get_engine.cache_clear()
    if hasattr(publish.publisher, "cache_clear"):
        publish.publisher.cache_clear()


def function_client(target: str, monkeypatch: pytest.MonkeyPatch, db_url: str) -> FlaskClient:
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("DAGRELAY_PROJECT_ID", "dagrelay-test")
    monkeypatch.setenv("DAGRELAY_EVENTS_TOPIC", "events")
    monkeypatch.delenv("DAGRELAY_CONFIG", raising=False)
    clear_caches()
    client = framework_client(target, "http")
    client.set_cookie(COOKIE, TOKEN)
    return client


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> InMemoryPublisher:
    """What the operator function publishes, kept in memory (no emulator needed)."""
    fake = InMemoryPublisher()
    monkeypatch.setattr(publish, "publisher", lambda: fake)
    return fake


@pytest.fixture
def operate(monkeypatch: pytest.MonkeyPatch, db_url: str) -> Iterator[FlaskClient]:
    yield function_client("operate", monkeypatch, db_url)
    clear_caches()


@pytest.fixture
def status(monkeypatch: pytest.MonkeyPatch, db_url: str) -> Iterator[FlaskClient]:
    yield function_client("status", monkeypatch, db_url)
    clear_caches()


@pytest.fixture
def pipeline(
    insert_pipeline: Callable[..., dict[str, int]],
    engine: DagEngine,
    publisher: InMemoryPublisher,
) -> None:
    """``ops`` (first -> second) with batch b1 FAILED at ``second``."""
    insert_pipeline("ops", {"first": [], "second": ["first"]}, handlers={"second": "python.fail"})
    engine.start_batch(StartBatch("ops", "b1"))
    drive(engine, publisher)


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def trigger(client: FlaskClient, params: str, **extra: str) -> Any:
    form = {"pipeline": "ops", "batch_id": "b2", "params": params, "csrf_token": TOKEN}
    return client.post("/actions/trigger", data=form | extra, headers=SAME)


def text(response: Any) -> str:
    return str(response.get_data(as_text=True))


@pytest.mark.usefixtures("pipeline")
def test_params_nested_100000_deep_are_400_naming_the_limit(
    operate: FlaskClient, sent: InMemoryPublisher
) -> None:
    response = trigger(operate, nested(100_000))
    assert response.status_code == 400, text(response)[:300]
    assert f"limit is {MAX_DEPTH}" in text(response)
    assert sent.sent == []


@pytest.mark.usefixtures("pipeline")
def test_a_20_mb_form_is_413_naming_the_limit_and_the_size(
    operate: FlaskClient, sent: InMemoryPublisher
) -> None:
    response = trigger(operate, json.dumps({"big": "x" * 20_000_000}))
    assert response.status_code == 413, text(response)[:300]
    assert f"{limits.MAX_BODY_BYTES} bytes" in text(response)
    assert "20000" in text(response)  # the actual size
    assert sent.sent == []


@pytest.mark.usefixtures("pipeline")
def test_a_3_mb_value_is_413(operate: FlaskClient, sent: InMemoryPublisher) -> None:
    response = trigger(operate, json.dumps({"v": "x" * 3_000_000}))
    assert response.status_code == 413
    assert sent.sent == []


@pytest.mark.usefixtures("pipeline")
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"pipeline=ops&batch_id=b2&params=%7B%22a%22%3A%22%FF%22%7D", "not UTF-8"),
        (b"pipeline=ops&batch_id=b2%ED%A0%80", "not UTF-8"),  # a surrogate, CESU-style
        (b"pipeline=ops&batch_id=b2&params=%7B%22a%22%3A%22%00%22%7D", "NUL"),
        (b"pipeline=ops%00&batch_id=b2", "NUL"),
        (b"pipeline=ops&batch_id=b2&params=%7B%22a%22%3A1e999%7D", "out of range"),
        (b"pipeline=ops&batch_id=b2&params=%7B%22a%22%3ANaN%7D", "not a JSON value"),
        (b"pipeline=ops&batch_id=b2&params=%7B%22a%22%3A%22%5Cud800%22%7D", "surrogate"),
    ],
    ids=[
        "bad utf-8",
        "surrogate bytes",
        "NUL in params",
        "NUL in a field",
        "1e999",
        "NaN",
        "\\ud800",
    ],
)
def test_bad_encodings_are_400(
    operate: FlaskClient, sent: InMemoryPublisher, body: bytes, reason: str
) -> None:
    body += f"&csrf_token={TOKEN}".encode()
    response = operate.post("/actions/trigger", data=body, content_type=FORM, headers=SAME)
    assert response.status_code == 400, text(response)[:300]
    assert reason in text(response)
    assert sent.sent == []


@pytest.mark.usefixtures("pipeline")
def test_a_form_in_another_content_type_is_415(
    operate: FlaskClient, sent: InMemoryPublisher
) -> None:
    body = json.dumps({"pipeline": "ops", "batch_id": "b2", "csrf_token": TOKEN})
    response = operate.post(
        "/actions/trigger", data=body, content_type="application/json", headers=SAME
    )
    assert response.status_code == 415
    assert FORM in text(response)
    assert sent.sent == []


@pytest.mark.usefixtures("pipeline")
def test_a_huge_body_to_the_status_function_is_413(status: FlaskClient) -> None:
    response = status.post("/api/batches", data=b"x" * 20_000_000, content_type=FORM)
    assert response.status_code == 413
    assert "limit" in text(response)
    response = status.get("/api/batches", data=b"x" * 20_000_000)
    assert response.status_code == 413


@pytest.mark.usefixtures("pipeline")
@pytest.mark.parametrize(
    ("error", "status_code"),
    [
        (RuntimeError("topic projects/p/topics/events not found"), 502),
        (TimeoutError("no answer in 10 s"), 503),
    ],
)
def test_a_failed_publish_is_502_or_503_with_the_reason(
    operate: FlaskClient,
    monkeypatch: pytest.MonkeyPatch,
    error: BaseException,
    status_code: int,
) -> None:
    failing = FailingPublisher(error)
    monkeypatch.setattr(publish, "publisher", lambda: failing)
    response = trigger(operate, '{"month": "2024-03"}')
    assert response.status_code == status_code
    assert str(error) in text(response)
    assert "nothing was published" in text(response)
    assert failing.calls == 1


def router_rejects(message: dict[str, Any]) -> str:
    """The router's reason for refusing ``message`` as the dashboard would have sent it."""
    data = json.dumps(message).encode("utf-8", "surrogatepass")
    envelope = Envelope(base64.b64encode(data).decode(), {"action": message["action"]})
    with pytest.raises(BadMessage) as refused:
        parse(envelope)
    return refused.value.reason


BIG = "x" * (MAX_DATA_BYTES // 2 + 1)


@pytest.mark.usefixtures("pipeline")
@pytest.mark.parametrize(
    ("params", "as_sent"),
    [
        ('{"a": "\\u0000"}', {"a": "\x00"}),
        ('{"a": 1e999}', {"a": float("inf")}),
        ('{"a": "\\ud800"}', {"a": "\ud800"}),
        (json.dumps({"a": BIG, "b": BIG}), {"a": BIG, "b": BIG}),
        (nested(MAX_DEPTH + 1), json.loads(nested(MAX_DEPTH + 1))),
    ],
    ids=["NUL", "1e999", "lone surrogate", "over the message size", "too deep"],
)
def test_the_dashboard_refuses_what_the_router_would_reject(
    operate: FlaskClient, sent: InMemoryPublisher, params: str, as_sent: Any
) -> None:
    response = trigger(operate, params)
    assert response.status_code == 400, text(response)[:300]
    assert sent.sent == []
    message = {"action": "start_batch", "pipeline": "ops", "batch_id": "b2", "params": as_sent}
    assert router_rejects(message)


@pytest.mark.usefixtures("pipeline")
def test_what_the_dashboard_publishes_the_router_accepts(
    operate: FlaskClient,
    sent: InMemoryPublisher,
    engine: DagEngine,
    db: Engine,
    clock: FakeClock,
) -> None:
    response = trigger(operate, json.dumps({"month": "2024-03", "deep": json.loads(nested(50))}))
    assert response.status_code == 200, text(response)[:300]
    (published,) = sent.sent
    envelope = Envelope(base64.b64encode(published.data()).decode(), dict(published.attributes))
    assert Router(engine, db, clock, "dead").handle(envelope) == "started"
