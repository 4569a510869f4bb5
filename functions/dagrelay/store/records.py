"""What the router stores about a message it rejects, or one Pub/Sub dead-lettered: every value
made storable (escaped, see messages.escaped) and bounded — the payload's first 64 KiB with its
full size and sha256, so that a 10 MB message costs a row, not 10 MB."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dagrelay.bounds import stored_error
from dagrelay.messages import Envelope, escaped

MAX_STORED_CHARS = 65_536  # of the message data as delivered (base64)
MAX_TEXT_CHARS = 2_000  # of a reason, an id, an attribute value
MAX_ATTRIBUTES = 100  # Pub/Sub's own limit per message


def bounded(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """``text`` escaped and cut to ``limit`` characters (marked when cut)."""
    text = escaped(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Payload:
    """The message data as delivered: its start, its full size in bytes and its sha256."""

    data: str | None
    size: int
    sha256: str

    @classmethod
    def of(cls, data: str | None) -> Payload:
        raw = (data or "").encode("utf-8", "backslashreplace")
        stored = None if data is None else escaped(data[:MAX_STORED_CHARS])
        return cls(stored, len(raw), hashlib.sha256(raw).hexdigest())


def storable_attributes(attributes: Mapping[str, str]) -> dict[str, str]:
    items = list(attributes.items())[:MAX_ATTRIBUTES]
    return {bounded(str(k), 256): bounded(str(v)) for k, v in items}


@dataclass(frozen=True)
class Rejection:
    message_id: str | None
    attributes: dict[str, str]
    payload: Payload
    reason: str

    @classmethod
    def of(cls, envelope: Envelope, reason: str) -> Rejection:
        return cls(
            message_id=None if envelope.message_id is None else bounded(envelope.message_id),
            attributes=storable_attributes(envelope.attributes),
            payload=Payload.of(envelope.data),
            reason=stored_error(reason),
        )

    def log_fields(self) -> dict[str, Any]:
        """What a log line says about it when the database cannot (a stable, JSON-safe dict)."""
        return {
            "message_id": self.message_id,
            "reason": self.reason,
            "payload_bytes": self.payload.size,
            "payload_sha256": self.payload.sha256,
        }


@dataclass(frozen=True)
class DeadLetter:
    """A message Pub/Sub gave up on, with what it was for when it parses."""

    rejection: Rejection
    source_subscription: str | None
    delivery_attempts: int | None
    about: dict[str, str | None] = field(default_factory=dict)  # action, pipeline, batch_id, task

    def row(self) -> dict[str, Any]:
        about = {k: self.about.get(k) for k in ("action", "pipeline", "batch_id", "task")}
        return {
            "source_subscription": self.source_subscription,
            "delivery_attempts": self.delivery_attempts,
            **{k: None if v is None else bounded(v) for k, v in about.items()},
        }
