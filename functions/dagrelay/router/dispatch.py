"""The main event router: validates a message and dispatches it to the engine.

Acknowledge or redeliver is decided here, deliberately: a message that can never be processed
(BadMessage) is logged, recorded in rejected_messages and acknowledged; an infrastructure failure
(database unreachable, ...) propagates, so Pub/Sub redelivers it (and dead-letters it after the
subscription's maximum attempts).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol, assert_never

from sqlalchemy import Engine as SqlEngine

from dagrelay import messages
from dagrelay.engine.core import Clock, Engine
from dagrelay.engine.sweeper import Sweeper
from dagrelay.errors import BadMessage
from dagrelay.store import transitions as store

log = logging.getLogger(__name__)


class Ingest(Protocol):
    """What the router needs of ingestion (dagrelay.ingest.Ingestor)."""

    def __call__(self, notification: messages.ObjectFinalized) -> str: ...


class Router:
    def __init__(
        self,
        engine: Engine,
        db: SqlEngine,
        clock: Clock,
        dead_letter_topic: str,
        ingest: Ingest | None = None,
    ) -> None:
        self.engine = engine
        self.ingest = ingest
        self.sweeper = Sweeper(engine)  # a file's steps are tasks: the engine's sweep covers them
        self.db = db
        self.clock = clock
        self.dead_letter_topic = dead_letter_topic

    def handle_push(self, body: Any, source: str | None = None) -> str:
        """Handle a Pub/Sub push body (or Pub/Sub CloudEvent data) from the topic named in
        ``source`` (the CloudEvent source, ``//pubsub.googleapis.com/projects/p/topics/t``).
        Returns what happened."""
        try:
            envelope = messages.envelope_from_push(body)
        except BadMessage as exc:
            raw = body.get("message") if isinstance(body, Mapping) else None
            self._reject(messages.Envelope(data=repr(raw)[:10_000]), exc.reason)
            return "rejected"
        if source is not None and source.endswith(f"/topics/{self.dead_letter_topic}"):
            return self.record_dead_letter(envelope)
        return self.handle(envelope)

    def handle(self, envelope: messages.Envelope) -> str:
        try:
            message = messages.parse(envelope)
            return self._dispatch(message, envelope)
        except BadMessage as exc:
            self._reject(envelope, exc.reason)
            return "rejected"

    def _dispatch(self, message: messages.Message, envelope: messages.Envelope) -> str:  # noqa: PLR0911 - one return per action
        match message:
            case messages.StartBatch():
                started = self.engine.start_batch(message, envelope.message_id)
                return "started" if started.created else "duplicate"
            case messages.RunTask():
                return self.engine.run_task(message).value.lower()
            case messages.PollTask():
                return self.engine.poll_task(message).value.lower()
            case messages.Sweep():
                return f"swept: {self.sweeper.sweep(message.older_than_s)}"
            case messages.CancelBatch():
                return "cancelled" if self.engine.cancel_batch(message) else "not running"
            case messages.Rerun():
                return f"rerun: {self.engine.rerun(message)} rows reset"
            case messages.ObjectFinalized():
                if self.ingest is None:
                    raise BadMessage(
                        f"ingestion is not configured: gs://{message.bucket}/{message.name}"
                    )
                return self.ingest(message)
            case _:
                assert_never(message)  # mypy: every action of messages.Message is dispatched

    def _reject(self, envelope: messages.Envelope, reason: str) -> None:
        log.warning(
            "message rejected: %s",
            reason,
            extra={"action": "reject", "message_id": envelope.message_id, "reason": reason},
        )
        with self.db.begin() as conn:
            store.record_rejected_message(
                conn,
                message_id=envelope.message_id,
                attributes=envelope.attributes,
                data=envelope.data,
                reason=reason,
                now=self.clock(),
            )

    def record_dead_letter(self, envelope: messages.Envelope) -> str:
        """A message Pub/Sub gave up on (the router failed it max_delivery_attempts times):
        recorded once with what it was for, logged as an ERROR, acknowledged."""
        attrs = envelope.attributes
        count = attrs.get("CloudPubSubDeadLetterSourceDeliveryCount", "")
        subscription = attrs.get("CloudPubSubDeadLetterSourceSubscription")
        fields: dict[str, Any] = {
            "message_id": envelope.message_id,
            "source_subscription": subscription,
            "delivery_attempts": int(count) if count.isascii() and count.isdigit() else None,
            "action": None,
            "pipeline": None,
            "batch_id": None,
            "task": None,
            "attributes": attrs,
            "data": envelope.data,
        }
        try:
            message = messages.parse(envelope)
            fields["action"] = _ACTION_NAMES.get(type(message), type(message).__name__)
            for key in ("pipeline", "batch_id", "task"):
                fields[key] = getattr(message, key, None)
            what = "the message"
        except BadMessage as exc:
            what = f"a malformed message ({exc.reason})"
        fields["reason"] = (
            f"Pub/Sub dead-lettered {what} after {count or 'several'} failed deliveries"
            f" on {subscription or 'the events subscription'}; the router's logs say why"
        )
        with self.db.begin() as conn:
            new = store.record_dead_letter(conn, fields=fields, now=self.clock())
        if new:
            log.error(
                "dead letter: %s",
                fields["reason"],
                extra={k: fields[k] for k in ("action", "pipeline", "batch_id", "task")},
            )
        return "dead-lettered"


_ACTION_NAMES = {
    messages.StartBatch: "start_batch",
    messages.RunTask: "run_task",
    messages.PollTask: "poll_task",
    messages.Sweep: "sweep",
    messages.Rerun: "rerun",
    messages.CancelBatch: "cancel_batch",
    messages.ObjectFinalized: "object_finalize",
}
