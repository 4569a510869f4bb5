"""The one outbox relay (dagrelay.store.outbox.OutboxRelay), used by the engine after each
commit and by the sweeper for rows left behind: it holds no row lock while it publishes, and a
relay that dies after its claim leaves its rows to the next one once the lease has run out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta

import pytest
from sqlalchemy import Engine, text

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.engine.sweeper import Sweeper
from dagrelay.messages import StartBatch
from dagrelay.store.outbox import RELAY_LEASE_S, InMemoryPublisher, OutboxRelay, OutgoingMessage
from tests.conftest import FakeClock
from tests.integration.helpers import outbox_rows

pytestmark = pytest.mark.integration

InsertPipeline = Callable[..., dict[str, int]]


class LockProbe(InMemoryPublisher):
    """While it publishes, tries to lock the rows it was given from another connection."""

    def __init__(self, db: Engine) -> None:
        super().__init__()
        self.db = db
        self.locked_while_publishing: list[int] = []

    def publish(self, messages: Sequence[OutgoingMessage]) -> list[BaseException | None]:
        ids = [m.outbox_id for m in messages if m.outbox_id is not None]
        assert len(ids) == len(messages), "every relayed message comes from the outbox"
        with self.db.begin() as conn:
            free = conn.execute(
                text(
                    "SELECT outbox_id FROM outbox WHERE outbox_id = ANY(CAST(:ids AS bigint[])) "
                    "FOR UPDATE SKIP LOCKED"
                ),
                {"ids": ids},
            ).scalars()
            self.locked_while_publishing = sorted(set(ids) - set(free))
        return super().publish(messages)


def leave_unpublished(engine: DagEngine, publisher: InMemoryPublisher) -> None:
    publisher.fail_with = RuntimeError("down")
    engine.start_batch(StartBatch("p", "b1"))
    publisher.fail_with = None


def test_the_sweepers_relay_holds_no_row_lock_while_publishing(
    engine: DagEngine, insert_pipeline: InsertPipeline, db: Engine, clock: FakeClock
) -> None:
    insert_pipeline("p", {"a": [], "b": []})
    probe = LockProbe(db)
    relay = OutboxRelay(db, probe, clock)
    probe.fail_with = RuntimeError("down")
    engine.outbox = relay
    engine.start_batch(StartBatch("p", "b1"))
    probe.fail_with = None

    assert Sweeper(engine).relay_outbox(0) == 2
    assert len(probe.sent) == 2
    assert probe.locked_while_publishing == []
    assert all(r["published_at"] is not None for r in outbox_rows(db))


def test_a_relay_that_died_after_its_claim_leaves_the_rows_until_the_lease_ends(
    engine: DagEngine,
    publisher: InMemoryPublisher,
    insert_pipeline: InsertPipeline,
    db: Engine,
    clock: FakeClock,
) -> None:
    insert_pipeline("p", {"a": []})
    leave_unpublished(engine, publisher)
    with db.begin() as conn:  # what a relay's claim writes before it dies
        conn.execute(
            text("UPDATE outbox SET relay_lease_until = :t"),
            {"t": clock() + timedelta(seconds=RELAY_LEASE_S)},
        )

    assert Sweeper(engine).relay_outbox(0) == 0  # claimed by the dead relay
    clock.advance(RELAY_LEASE_S)
    assert Sweeper(engine).relay_outbox(0) == 1
    assert [m.payload["task"] for m in publisher.drain()] == ["a"]


def test_a_failed_relay_gives_its_claim_back(
    engine: DagEngine,
    publisher: InMemoryPublisher,
    insert_pipeline: InsertPipeline,
    db: Engine,
) -> None:
    insert_pipeline("p", {"a": []})
    leave_unpublished(engine, publisher)
    publisher.fail_with = RuntimeError("still down")
    assert Sweeper(engine).relay_outbox(0) == 0
    publisher.fail_with = None

    assert Sweeper(engine).relay_outbox(0) == 1  # at once: no lease to wait for
    [row] = outbox_rows(db)
    assert row["publish_attempts"] == 3
    assert row["published_at"] is not None
