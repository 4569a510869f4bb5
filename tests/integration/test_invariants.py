"""The invariants of tests/invariants.py read in one statement: a violation planted in the
database, or in what the model knows, is reported under its invariant's name."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text

from dagrelay.store.db import StatementCounter
from tests import invariants
from tests.invariants import Facts

pytestmark = pytest.mark.integration


def test_a_clean_database_holds_every_invariant_in_one_statement(db: Engine) -> None:
    with StatementCounter().attached(db) as counter, db.connect() as conn:
        assert invariants.check_all(conn, Facts()) == []
        assert invariants.check_all(conn, Facts(), quiescent=True) == []
    assert counter.count == 2


def test_violations_are_reported_by_their_invariants_names(db: Engine) -> None:
    with db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO rejected_messages (message_id, reason, payload_bytes, "
                "payload_sha256) VALUES ('outbox-7', 'bad', 0, repeat('0', 64))"
            )
        )
    facts = Facts(cancelled={("p", "gone"): frozenset({1})}, raised=["outbox-8: boom"])
    with db.connect() as conn:
        found = invariants.check_all(conn, facts, quiescent=True)
        skipping = invariants.check_all(conn, facts, skip={"engine_messages_never_rejected"})
    assert found == [
        "cancel_holds_until_resumed: cancelled batch p/gone is None without a resume",
        "engine_messages_never_rejected: the engine's own message outbox-7 was rejected: bad",
        (
            "engine_messages_never_rejected: a delivery of the engine's own message raised: "
            "outbox-8: boom"
        ),
    ]
    assert skipping == found[:1]
