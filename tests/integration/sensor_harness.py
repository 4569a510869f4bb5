"""Driving sensors in a test: a router over the engine (every message parsed as the router
would), a fake clock moved poke by poke, the outbox relay publishing what falls due."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, text

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.messages import Envelope, encode
from dagrelay.router.dispatch import Router
from dagrelay.store.outbox import InMemoryPublisher, OutgoingMessage
from tests.conftest import FakeClock
from tests.integration.helpers import EVENTS_TOPIC


def envelope(message: Mapping[str, Any], message_id: str) -> Envelope:
    data = base64.b64encode(encode(message)).decode()
    return Envelope(data, {"action": str(message.get("action"))}, message_id)


@dataclass
class Sensors:
    """One pipeline's batches driven through a router; ``delivered`` counts every delivery."""

    db: Engine
    engine: DagEngine
    publisher: InMemoryPublisher
    clock: FakeClock
    router: Router = field(init=False)
    delivered: list[tuple[str, str]] = field(default_factory=list)  # (action, outcome)
    _ids: int = 0

    def __post_init__(self) -> None:
        self.router = Router(self.engine, self.db, self.clock, dead_letter_topic="dead-letters")

    def send(self, message: Mapping[str, Any], message_id: str | None = None) -> str:
        """Deliver one message as Pub/Sub would push it."""
        self._ids += 1
        outcome = self.router.handle(envelope(message, message_id or f"m-{self._ids}"))
        self.delivered.append((str(message.get("action")), outcome))
        return outcome

    def pending(self) -> list[OutgoingMessage]:
        return self.publisher.drain(EVENTS_TOPIC)

    def deliver(self, copies: int = 1, limit: int = 1000) -> list[str]:
        """Deliver what was published (``copies`` times each) until nothing is left."""
        outcomes: list[str] = []
        while messages := self.pending():
            for message in messages:
                outcomes += [self.send(message.payload) for _ in range(copies)]
            assert len(outcomes) < limit, "the deliveries do not converge"
        return outcomes

    def poke(self, seconds: float, copies: int = 1) -> list[str]:
        """Move the clock on, let the relay publish what fell due, deliver it."""
        self.clock.advance(seconds)
        self.engine.outbox.relay(cutoff=self.clock() - timedelta(days=1), limit=10_000)
        return self.deliver(copies)

    def start(self, pipeline: str, batch_id: str) -> None:
        self.send({"action": "start_batch", "pipeline": pipeline, "batch_id": batch_id})
        self.deliver()

    def row(self, task: str, batch_id: str = "b1") -> dict[str, Any]:
        with self.db.connect() as conn:
            found = conn.execute(
                text(
                    "SELECT tl.status::text AS status, tl.attempt, tl.job, tl.poll_at, tl.output, "
                    "tl.error FROM task_log tl JOIN tasks t USING (task_id) "
                    "WHERE t.name = :t AND tl.batch_id = :b"
                ),
                {"t": task, "b": batch_id},
            ).mappings()
            return dict(found.one())

    def batch(self, pipeline: str, batch_id: str = "b1") -> str:
        with self.db.connect() as conn:
            return str(
                conn.execute(
                    text("SELECT status::text FROM batches WHERE pipeline = :p AND batch_id = :b"),
                    {"p": pipeline, "b": batch_id},
                ).scalar_one()
            )

    def held_polls(self) -> int:
        """poll_task messages in the outbox not yet published."""
        with self.db.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT count(*) FROM outbox WHERE payload->>'action' = 'poll_task' "
                        "AND published_at IS NULL"
                    )
                ).scalar_one()
            )


def params(**values: Any) -> str:
    return json.dumps(values)
