"""Pools and limits as the operator changes them (``dagrelay pool set``). The slots are taken
and given back by the claim and the end of an attempt (``dagrelay_claim_limited`` and
``dagrelay_release_slots`` in migrations/versions/0013_pools.py; ARCHITECTURE.md, "Pools")."""

from __future__ import annotations

import logging

from dagrelay.engine.core import Engine
from dagrelay.errors import DagrelayError
from dagrelay.store import pools as store

log = logging.getLogger(__name__)

MAX_SLOTS = 100_000
MAX_NAME = 200


def set_pool(engine: Engine, name: str, slots: int, description: str | None = None) -> store.Pool:
    """Create or change a pool. A lowered count holds new claims at once (running attempts
    finish); a raised one releases as many queued tasks as now fit, in order."""
    check_pool(name, slots)
    now = engine.clock()
    with engine.db.begin() as conn:
        pool = store.set_pool(conn, name=name, slots=slots, description=description, now=now)
        released = store.release_pool(conn, name=name, topic=engine.events_topic, now=now)
    engine.publish(released)
    log.info(
        "pool %s: %d slots; %d queued tasks released",
        name,
        slots,
        len(released),
        extra={"action": "pool_set", "pool": name, "slots": slots},
    )
    return pool


def check_pool(name: str, slots: int) -> None:
    problems = []
    if not name.strip() or len(name) > MAX_NAME:
        problems.append(f"pool name {name!r} must be 1 to {MAX_NAME} characters, not blank")
    if not 0 <= slots <= MAX_SLOTS:
        problems.append(f"pool {name!r}: slots must be between 0 and {MAX_SLOTS}, got {slots}")
    if problems:
        raise DagrelayError("; ".join(problems))
