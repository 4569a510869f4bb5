"""The outbox's side of publishing: a message as the engine writes it (an ``outbox`` row), the
narrow ``Publisher`` interface it is published through after commit, and an in-memory fake.
The real Pub/Sub client is ``dagrelay.pubsub``; the store never imports it."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class OutgoingMessage:
    topic: str  # topic id, e.g. "dagrelay-events"
    payload: Mapping[str, Any]
    attributes: Mapping[str, str] = field(default_factory=dict)
    outbox_id: int | None = None
    available_at: datetime | None = None  # None: now; later: held in the outbox until then

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> OutgoingMessage:
        """An outbox row as a statement returns it in JSON (``to_jsonb`` of its RETURNING)."""
        available_at = row.get("available_at")
        return cls(
            topic=row["topic"],
            payload=row["payload"],
            attributes=row["attributes"],
            outbox_id=row["outbox_id"],
            available_at=datetime.fromisoformat(available_at) if available_at else None,
        )

    def data(self) -> bytes:
        return json.dumps(self.payload, separators=(",", ":"), sort_keys=True).encode()


class Publisher(Protocol):
    def publish(self, messages: Sequence[OutgoingMessage]) -> list[BaseException | None]:
        """Publish all messages; wait for Pub/Sub to accept them. One result per message:
        None when accepted, else the error (the caller leaves that outbox row for the relay)."""
        ...


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
