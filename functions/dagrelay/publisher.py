"""Publishing to Pub/Sub behind a narrow interface: the real client, and an in-memory fake."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from google.api_core import retry as api_retry
from google.cloud.pubsub_v1 import PublisherClient
from google.cloud.pubsub_v1.types import BatchSettings


@dataclass(frozen=True)
class OutgoingMessage:
    topic: str  # topic id, e.g. "dagrelay-events"
    payload: Mapping[str, Any]
    attributes: Mapping[str, str] = field(default_factory=dict)
    outbox_id: int | None = None
    available_at: datetime | None = None  # None: now; later: held in the outbox until then

    def data(self) -> bytes:
        return json.dumps(self.payload, separators=(",", ":"), sort_keys=True).encode()


class Publisher(Protocol):
    def publish(self, messages: Sequence[OutgoingMessage]) -> list[BaseException | None]:
        """Publish all messages; wait for Pub/Sub to accept them. One result per message:
        None when accepted, else the error (the caller leaves that outbox row for the relay)."""
        ...


class PubSubPublisher:
    """The real client. Honors ``PUBSUB_EMULATOR_HOST`` by itself; created once per process."""

    def __init__(self, project_id: str, timeout_s: float = 30.0) -> None:
        self.project_id = project_id
        self.timeout_s = timeout_s
        self._client = PublisherClient(batch_settings=BatchSettings(max_latency=0.001))
        self._retry = api_retry.Retry(initial=0.1, maximum=2.0, timeout=timeout_s)

    def publish(self, messages: Sequence[OutgoingMessage]) -> list[BaseException | None]:
        futures = [
            self._client.publish(
                self._client.topic_path(self.project_id, m.topic),
                m.data(),
                retry=self._retry,
                **dict(m.attributes),
            )
            for m in messages
        ]
        results: list[BaseException | None] = []
        for future in futures:
            try:
                future.result(timeout=self.timeout_s)
                results.append(None)
            except Exception as exc:  # noqa: BLE001 - each failure is reported to the caller
                results.append(exc)
        return results


class InMemoryPublisher:
    """A fake for tests and benchmarks: keeps what was published; can be told to fail."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent: list[OutgoingMessage] = []
        self.fail_with: BaseException | None = None

    def publish(self, messages: Sequence[OutgoingMessage]) -> list[BaseException | None]:
        with self._lock:
            if self.fail_with is not None:
                return [self.fail_with for _ in messages]
            self.sent.extend(messages)
            return [None for _ in messages]

    def drain(self, topic: str | None = None) -> list[OutgoingMessage]:
        """Take the messages published so far (to ``topic`` only, if given)."""
        with self._lock:
            taken = [m for m in self.sent if topic is None or m.topic == topic]
            self.sent = [m for m in self.sent if not (topic is None or m.topic == topic)]
            return taken
