"""The main event router: validates a message and dispatches it to the engine.

Acknowledge or redeliver is decided here, deliberately: a message that can never be processed
(BadMessage) is logged, recorded in rejected_messages and acknowledged; an infrastructure failure
(database unreachable, ...) propagates, so Pub/Sub redelivers it (and dead-letters it after the
subscription's maximum attempts).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine as SqlEngine

from dagrelay import messages, store
from dagrelay.engine import Clock, Engine
from dagrelay.errors import BadMessage

log = logging.getLogger(__name__)


class Router:
    def __init__(self, engine: Engine, db: SqlEngine, clock: Clock) -> None:
        self.engine = engine
        self.db = db
        self.clock = clock

    def handle_push(self, body: Any) -> str:
        """Handle a Pub/Sub push body (or Pub/Sub CloudEvent data). Returns what happened."""
        try:
            envelope = messages.envelope_from_push(body)
        except BadMessage as exc:
            raw = body.get("message") if isinstance(body, Mapping) else None
            self._reject(messages.Envelope(data=repr(raw)[:10_000]), exc.reason)
            return "rejected"
        return self.handle(envelope)

    def handle(self, envelope: messages.Envelope) -> str:
        try:
            message = messages.parse(envelope)
            return self._dispatch(message, envelope)
        except BadMessage as exc:
            self._reject(envelope, exc.reason)
            return "rejected"

    def _dispatch(self, message: messages.Message, envelope: messages.Envelope) -> str:
        match message:
            case messages.StartBatch():
                started = self.engine.start_batch(message, envelope.message_id)
                return "started" if started.created else "duplicate"
            case messages.RunTask():
                return self.engine.run_task(message).value.lower()
            case messages.Sweep():
                relayed = self.engine.relay_outbox(message.older_than_s)
                return f"swept {relayed}"
            case messages.ObjectFinalized():
                raise BadMessage(
                    f"no ingestion source is configured for gs://{message.bucket}/{message.name}"
                )
            case _:
                action = type(message).__name__
                raise BadMessage(f"action {action} is not supported by this version of dagrelay")

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
