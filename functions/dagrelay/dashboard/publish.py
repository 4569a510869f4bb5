"""Publishing the operator's messages to the events topic, as the CLI does. The Pub/Sub client
is imported and created on the first action only, so the read-only status function never
loads it. A failure is ``PublishFailed``: what was and was not published, and whether Pub/Sub
was unreachable (503: try again) or refused (502)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

from dagrelay.config import get_settings
from dagrelay.errors import DagrelayError
from dagrelay.store.outbox import OutgoingMessage

if TYPE_CHECKING:
    from dagrelay.pubsub import PubSubPublisher


@cache
def publisher() -> PubSubPublisher:
    from dagrelay.pubsub import PubSubPublisher  # noqa: PLC0415 - see the module docstring

    return PubSubPublisher(get_settings().project_id, timeout_s=PUBLISH_TIMEOUT_S)


PUBLISH_TIMEOUT_S = 10.0  # an operator waits for the page: fail within this, not a minute
UNAVAILABLE = ("TimeoutError", "DeadlineExceeded", "ServiceUnavailable", "RetryError")


class PublishFailed(DagrelayError):
    """Pub/Sub did not accept every message; ``status`` is the HTTP answer (502 or 503)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def publish(messages: Sequence[dict[str, Any]]) -> None:
    """Publish each message (JSON data, its ``action`` as an attribute) and wait until Pub/Sub
    has accepted it; PublishFailed naming each that failed and saying what was published."""
    topic = get_settings().events_topic
    outgoing = [OutgoingMessage(topic, m, {"action": str(m["action"])}) for m in messages]
    results = publisher().publish(outgoing)
    failed = [(m.payload, f) for m, f in zip(outgoing, results, strict=True) if f is not None]
    if not failed:
        return
    sent = [m.payload for m, f in zip(outgoing, results, strict=True) if f is None]
    reasons = "; ".join(f"{_what(m)}: {type(f).__name__}: {f}" for m, f in failed)
    done = (
        "nothing was published"
        if not sent
        else f"published only {', '.join(map(_what, sent))} (the others may be sent again)"
    )
    status = 503 if any(type(f).__name__ in UNAVAILABLE for _, f in failed) else 502
    raise PublishFailed(f"publishing to {topic} failed ({reasons}); {done}", status)


def _what(message: Mapping[str, Any]) -> str:
    task = f"/{message['task']}" if "task" in message else ""
    return f"{message['action']} {message.get('pipeline')}/{message.get('batch_id')}{task}"
