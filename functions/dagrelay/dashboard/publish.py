"""Publishing the operator's messages to the events topic, as the CLI does. The Pub/Sub client
is imported and created on the first action only, so the read-only status function never
loads it."""

from __future__ import annotations

from collections.abc import Sequence
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

    return PubSubPublisher(get_settings().project_id)


def publish(messages: Sequence[dict[str, Any]]) -> None:
    """Publish each message (JSON data, its ``action`` as an attribute) and wait until Pub/Sub
    has accepted it; DagrelayError naming the first that failed."""
    topic = get_settings().events_topic
    outgoing = [OutgoingMessage(topic, m, {"action": str(m["action"])}) for m in messages]
    for message, failure in zip(outgoing, publisher().publish(outgoing), strict=True):
        if failure is not None:
            raise DagrelayError(
                f"publishing {message.payload['action']} to {topic} failed: {failure}"
            )
