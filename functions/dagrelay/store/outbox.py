"""The outbox's side of publishing: a message as the engine writes it (an ``outbox`` row), the
narrow ``Publisher`` interface it is published through after commit, an in-memory fake, and the
one relay that publishes rows and records the result (the engine after each commit, the sweeper
for rows left behind). The real Pub/Sub client is ``dagrelay.pubsub``; the store never imports
it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Engine

from dagrelay import tracing
from dagrelay.bounds import stored_error
from dagrelay.messages import encode
from dagrelay.store.db import retry_transient
from dagrelay.store.queries import query
from dagrelay.tracing import TRACEPARENT

log = logging.getLogger(__name__)

RELAY_LEASE_S = 120  # a claimed row's publish must end by then, or another relay takes it


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
        return encode(self.payload)


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


class TraceContexts:
    """Each batch's trace context (``batches.trace_context``, written once at its start), as
    the relay copies it into the ``traceparent`` attribute of the batch's messages: read once
    per batch and process, in one statement for all the batches of a publish; kept in a
    bounded map. Only used with tracing on (ARCHITECTURE.md, "Tracing and metrics")."""

    LIMIT = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[tuple[str, str], str | None] = {}

    def remember(self, pipeline: str, batch_id: str, context: str | None) -> None:
        with self._lock:
            if len(self._known) >= self.LIMIT:
                self._known.clear()
            self._known[(pipeline, batch_id)] = context

    def stamp(self, db: Engine, messages: Sequence[OutgoingMessage]) -> list[OutgoingMessage]:
        """The messages, each about a batch with a trace context carrying it (a message that
        has a ``traceparent`` already keeps it)."""
        keys = {k for m in messages if (k := _batch_key(m)) is not None}
        with self._lock:
            known = {k: self._known[k] for k in keys if k in self._known}
        missing = sorted(keys - known.keys())
        if missing:
            known |= self._read(db, missing)
        return [with_trace_context(m, known.get(_batch_key(m) or ("", ""))) for m in messages]

    def _read(self, db: Engine, keys: list[tuple[str, str]]) -> dict[tuple[str, str], str | None]:
        params = {"pipelines": [p for p, _ in keys], "batch_ids": [b for _, b in keys]}
        with db.connect() as conn:
            rows = conn.execute(query("batch_trace_contexts"), params).all()
        found = {(r.pipeline, r.batch_id): r.trace_context for r in rows}
        read = {key: found.get(key) for key in keys}
        for key, context in read.items():
            self.remember(*key, context)
        return read


def _batch_key(message: OutgoingMessage) -> tuple[str, str] | None:
    if TRACEPARENT in message.attributes:
        return None
    pipeline, batch_id = message.payload.get("pipeline"), message.payload.get("batch_id")
    if isinstance(pipeline, str) and isinstance(batch_id, str):
        return pipeline, batch_id
    return None


def with_trace_context(message: OutgoingMessage, context: str | None) -> OutgoingMessage:
    """The message with ``traceparent`` = ``context`` (unchanged without a context, or if it
    has one)."""
    if context is None or TRACEPARENT in message.attributes:
        return message
    return replace(message, attributes={**message.attributes, TRACEPARENT: context})


class OutboxRelay:
    """Publishes outbox rows and records each outcome (published, or the error for the next
    relay). Never holds a row lock across the network call: rows the engine just committed are
    published as they are; rows left behind are claimed with a short lease first."""

    def __init__(
        self,
        db: Engine,
        publisher: Publisher,
        clock: Callable[[], datetime],
        lease_s: float = RELAY_LEASE_S,
    ) -> None:
        self.db = db
        self.publisher = publisher
        self.clock = clock
        self.lease = timedelta(seconds=lease_s)
        self.trace_contexts = TraceContexts()

    def send(self, messages: Sequence[OutgoingMessage]) -> int:
        """Publish the messages that are due (after their commit); record the outcome. A failed
        publish, or a message held for later (a retry, a poll), stays for ``relay``. Returns
        how many were published."""
        now = self.clock()
        due = [m for m in messages if m.available_at is None or m.available_at <= now]
        if not due:
            return 0
        if tracing.enabled():
            due = self._stamp(due)
        results = self._publish(due)
        sent = [m.outbox_id for m, r in zip(due, results, strict=True) if r is None]
        failed = [(m.outbox_id, r) for m, r in zip(due, results, strict=True) if r is not None]
        self._record([i for i in sent if i is not None], failed)
        return len(sent)

    def _stamp(self, messages: Sequence[OutgoingMessage]) -> list[OutgoingMessage]:
        """The batch's trace context on each message; a failure to read it costs the trace
        link, never the publish."""
        try:
            return retry_transient(lambda: self.trace_contexts.stamp(self.db, messages))
        except Exception:
            log.warning("trace contexts not read; published without them", exc_info=True)
            return list(messages)

    def _publish(self, messages: Sequence[OutgoingMessage]) -> list[BaseException | None]:
        """One result per message. A publisher that refuses the whole call (the Pub/Sub client
        raises before sending when one message is malformed) is asked again one message at a
        time, so one bad row never stops the others (blast radius of one)."""
        try:
            return self.publisher.publish(messages)
        except Exception as exc:  # noqa: BLE001 - each message gets its own result below
            if len(messages) == 1:
                return [exc]
        return [self._publish(messages[i : i + 1])[0] for i in range(len(messages))]

    def relay(self, *, cutoff: datetime, limit: int) -> int:
        """Publish unpublished rows due since ``cutoff`` and held rows due by now: claimed in a
        short transaction of their own, published outside it. Returns how many were published."""

        def claim() -> list[OutgoingMessage]:
            now = self.clock()
            params = {"cutoff": cutoff, "now": now, "limit": limit, "lease_until": now + self.lease}
            with self.db.begin() as conn:
                rows = conn.execute(query("claim_unpublished_outbox"), params).all()
            return [OutgoingMessage(r.topic, r.payload, r.attributes, r.outbox_id) for r in rows]

        claimed = sorted(retry_transient(claim), key=lambda m: m.outbox_id or 0)
        return self.send(claimed)

    def _record(self, sent: list[int], failed: list[tuple[int | None, BaseException]]) -> None:
        """Mark what was published; give each failed row its own error (and its lease back)."""
        failed_ids = [i for i, _ in failed if i is not None]
        errors = [_error(exc) for i, exc in failed if i is not None]

        def transaction() -> None:
            with self.db.begin() as conn:
                if sent:
                    conn.execute(query("mark_published"), {"ids": sent, "now": self.clock()})
                if failed_ids:
                    params = {"ids": failed_ids, "errors": errors}
                    conn.execute(query("mark_publish_failed"), params)

        retry_transient(transaction)  # marking twice is harmless (WHERE published_at IS NULL)
        for outbox_id, exc in failed:
            log.warning("publish failed; left in outbox: %r", exc, extra={"outbox_id": outbox_id})


def _error(exc: BaseException) -> str:
    return stored_error(repr(exc))
