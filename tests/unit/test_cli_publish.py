"""The CLI's one-message publisher (REST): where it sends, what it retries, what it reports.
The real round trip to the emulator is in tests/integration/test_cli.py (trigger)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from dagrelay.cli.publish import ENDPOINT, Transient, endpoint, publish
from dagrelay.errors import DagrelayError


class FakePost:
    """Answers with the given outcomes in turn (an exception is raised); records the calls."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[tuple[str, dict[str, Any], dict[str, str]]] = []

    def __call__(self, url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> Any:
        self.calls.append((url, json.loads(body), headers))
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:8681")


def test_endpoint_honours_the_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    assert endpoint() == ("http://127.0.0.1:8681", False)
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST")
    assert endpoint() == (ENDPOINT, True)


def test_publish_sends_one_message_and_returns_its_id() -> None:
    post = FakePost({"messageIds": ["42"]})

    found = publish("p", "t", b'{"a": 1}', {"action": "start_batch"}, send=post)

    assert found == "42"
    [(url, body, headers)] = post.calls
    assert url == "http://127.0.0.1:8681/v1/projects/p/topics/t:publish"
    assert body == {
        "messages": [
            {
                "data": base64.b64encode(b'{"a": 1}').decode(),
                "attributes": {"action": "start_batch"},
            }
        ]
    }
    assert "Authorization" not in headers


def test_publish_retries_what_may_pass() -> None:
    clock = Clock()
    post = FakePost(Transient("HTTP 503"), Transient("reset"), {"messageIds": ["7"]})

    assert publish("p", "t", b"x", {}, send=post, sleep=clock.sleep, clock=clock) == "7"
    assert len(post.calls) == 3
    assert clock.now == pytest.approx(0.3)  # 0.1 then 0.2


def test_publish_gives_up_at_its_deadline() -> None:
    clock = Clock()
    post = FakePost(*[Transient("HTTP 503")] * 100)

    with pytest.raises(DagrelayError, match=r"^publishing to projects/p/topics/t failed: HTTP 503"):
        publish("p", "t", b"x", {}, timeout_s=5, send=post, sleep=clock.sleep, clock=clock)
    assert clock.now <= 5
    assert 3 < len(post.calls) < 10


def test_publish_does_not_retry_a_refusal() -> None:
    post = FakePost(DagrelayError("HTTP 404: Topic not found"))

    with pytest.raises(DagrelayError, match="t failed: HTTP 404: Topic not found"):
        publish("p", "t", b"x", {}, send=post)
    assert len(post.calls) == 1
