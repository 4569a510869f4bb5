"""The main event router: validates a message and dispatches it to the engine.

Acknowledge or redeliver is decided here, deliberately. Every message ends in exactly one of:
processed; rejected (recorded in rejected_messages with the reason, acknowledged) — a message that
can never be processed, including one whose values the database refuses; dead-lettered (recorded
in dead_letters, acknowledged). Only an infrastructure failure (database unreachable, ...) of a
valid message propagates, so Pub/Sub redelivers it and dead-letters it after the subscription's
maximum attempts. Recording a rejection or a dead letter never fails the delivery: when the
database cannot take the record, an ERROR log line carries it and the message is acknowledged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol, assert_never

from sqlalchemy import Engine as SqlEngine
from sqlalchemy.exc import DBAPIError

from dagrelay import messages, tracing
from dagrelay.engine.core import Clock, Engine
from dagrelay.engine.sweeper import Sweeper
from dagrelay.errors import BadMessage
from dagrelay.states import Action
from dagrelay.store import transitions as store
from dagrelay.store.db import refused_value, retry_transient
from dagrelay.store.records import DeadLetter, Rejection

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
            return self._handle_push(body, source)
        finally:
            tracing.flush()  # spans buffered for Cloud Trace leave before the instance idles

    def _handle_push(self, body: Any, source: str | None) -> str:
        try:
            envelope = messages.envelope_from_push(body)
        except BadMessage as exc:
            raw = body.get("message") if isinstance(body, Mapping) else None
            message_id = exc.message_id if isinstance(exc.message_id, str) else None
            self._reject(messages.Envelope(data=repr(raw), message_id=message_id), exc.reason)
            return "rejected"
        if source is not None and source.endswith(f"/topics/{self.dead_letter_topic}"):
            return self.record_dead_letter(envelope)
        return self.handle(envelope)

    def handle(self, envelope: messages.Envelope) -> str:
        try:
            message = messages.parse(envelope)
            # A start_batch's trace is the new batch's own (engine: tracing.batch_span, linked
            # to the sender's context); any other message's delivery is a span in its trace.
            span = message.action != Action.START_BATCH
            with tracing.delivery(envelope.attributes, message.action, span=span):
                return self._dispatch(message, envelope)
        except BadMessage as exc:
            reason = exc.reason
        except DBAPIError as exc:  # the values passed validation, yet the database refuses them
            refused = refused_value(exc)
            if refused is None:
                raise
            reason = refused
        self._reject(envelope, reason)
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
                cancelled = self.engine.cancel_batch(message)
                return cancelled.status.lower() if cancelled else "not running"
            case messages.Resume():
                return f"resumed: {self.engine.resume(message).started} tasks started"
            case messages.Rerun():
                return f"rerun: {self.engine.rerun(message)} rows reset"
            case messages.Signal():
                woken = self.engine.signal(message, envelope.message_id)
                return "duplicate" if woken is None else f"signal: {woken} sensors woken"
            case messages.ObjectFinalized():
                if self.ingest is None:
                    raise BadMessage(
                        f"ingestion is not configured: gs://{message.bucket}/{message.name}"
                    )
                return self.ingest(message)
            case _:
                assert_never(message)  # mypy: every action of messages.Message is dispatched

    def _reject(self, envelope: messages.Envelope, reason: str) -> None:
        rejection = Rejection.of(envelope, reason)
        log.warning("message rejected: %s", rejection.reason, extra=rejection.log_fields())

        def record() -> None:
            with self.db.begin() as conn:
                store.record_rejected_message(conn, rejection, now=self.clock())

        self._record_or_log("rejection", rejection, record)

    def record_dead_letter(self, envelope: messages.Envelope) -> str:
        """A message Pub/Sub gave up on (the router failed it max_delivery_attempts times):
        recorded once with what it was for, logged as an ERROR, and always acknowledged — a
        dead letter of a dead letter would help nobody."""
        attrs = envelope.attributes
        count = attrs.get("CloudPubSubDeadLetterSourceDeliveryCount", "")
        subscription = attrs.get("CloudPubSubDeadLetterSourceSubscription")
        about: dict[str, str | None] = {}
        try:
            message = messages.parse(envelope)
            about = {k: getattr(message, k, None) for k in ("pipeline", "batch_id", "task")}
            about["action"] = message.action.value
            what = "the message"
        except BadMessage as exc:
            what = f"a malformed message ({exc.reason})"
        reason = (
            f"Pub/Sub dead-lettered {what} after {count or 'several'} failed deliveries"
            f" on {subscription or 'the events subscription'}; the router's logs say why"
        )
        letter = DeadLetter(
            rejection=Rejection.of(envelope, reason),
            source_subscription=subscription,
            delivery_attempts=int(count) if count.isascii() and count.isdigit() else None,
            about=about,
        )

        def record() -> None:
            with self.db.begin() as conn:
                if store.record_dead_letter(conn, letter, now=self.clock()):
                    log.error("dead letter: %s", letter.rejection.reason, extra=letter.about)

        self._record_or_log("dead letter", letter.rejection, record)
        return "dead-lettered"

    def _record_or_log(self, what: str, rejection: Rejection, record: Callable[[], None]) -> None:
        """Record (retrying a transient database error); if that fails, the last resort is a
        structured ERROR log line with the reason, size and hash — and the message is acked."""
        try:
            retry_transient(record)
        except Exception as exc:  # noqa: BLE001 - whatever the failure, the delivery must end
            log.error(  # noqa: TRY400 - the record is the point; the traceback adds nothing
                "%s not recorded (%s: %s); this line is its only record",
                what,
                type(exc).__name__,
                str(exc)[:500],
                extra={"record": what, **rejection.log_fields()},
            )
